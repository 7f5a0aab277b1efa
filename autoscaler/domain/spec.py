"""scalerMetadata -> ScalerSpec: one frozen, validated object per target.

Every key is declared once in `KEYS`, which drives parsing, the error messages and
the documentation table (`autoscaler spec-keys`). Unknown keys are errors: a typo such
as `targetCoverge` would otherwise silently fall back to a default.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.domain.errors import SpecError
from autoscaler.domain.presets import PRESETS, expand_preset, validate_selector
from autoscaler.domain.signals import ReplicaSource, SignalKind, SignalQuery
from autoscaler.domain.types import MetricKind, TargetKey

MODELS = ("auto", "naive", "seasonal_naive", "ets", "mstl", "gbm")
COVERAGE_BASES = ("demand", "steps")
DEFAULT_COVERAGE_BASIS = "steps"
"""Chosen by measurement on the shared traces: see docs/backtest.md, "Coverage basis"."""
DEFAULT_HISTORY_SECONDS = 7 * 86400
MAX_HISTORY_SECONDS = 35 * 86400
CALIBRATION_WINDOW_STEPS = 2016
"""Steps the calibrator scores its coverage over (7 days of 5-minute steps). An unset
historyWindow holds at least as many (up to 35 days): the daily rebuild replays only
the window, so a shorter one would restart the calibrator young every day."""
MAX_METADATA_VALUE = 4096
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY = 128
"""Longest key accepted; every known key is far shorter, and a longer one is only quoted in part."""
MAX_METADATA_CHARACTERS = 32 * 1024
"""Keys and values together: a trigger's metadata is a few hundred characters."""
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENDPOINT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_WORKLOAD_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_METRIC_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,62}$")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# The key naming a custom query per kind of signal; `pods` counts the pods the sums cover.
SIGNAL_KEYS: dict[SignalKind, str] = {
    SignalKind.ARRIVALS: "arrivalsQuery",
    SignalKind.COMPLETIONS: "completionsQuery",
    SignalKind.WAITING: "waitingQuery",
    SignalKind.RUNNING: "runningQuery",
    SignalKind.UTILIZATION: "utilizationQuery",
    SignalKind.PODS: "podsQuery",
}
# Which signal is the primary query (the old single-series path, the inspection API).
_PRIMARY_ORDER = (
    SignalKind.ARRIVALS,
    SignalKind.COMPLETIONS,
    SignalKind.UTILIZATION,
    SignalKind.WAITING,
    SignalKind.RUNNING,
)


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '2h', '7d' -> seconds."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("must be a duration such as 90s, 5m, 2h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    default: str | None
    description: str


KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "query",
        None,
        "PromQL returning one series, typed by metricKind. Exactly one of query, preset and per-kind queries.",
    ),
    KeySpec("arrivalsQuery", None, "PromQL: requests (or tokens) per second arriving, whatever the replicas."),
    KeySpec("completionsQuery", None, "PromQL: requests per second finished (capped by the capacity provided)."),
    KeySpec("waitingQuery", None, "PromQL: requests queued, summed over pods; drained within drainTime."),
    KeySpec("runningQuery", None, "PromQL: requests in flight, summed over pods."),
    KeySpec("utilizationQuery", None, "PromQL: a per-replica fraction 0-1 averaged over ready pods."),
    KeySpec("podsQuery", None, "PromQL: how many pods the sums cover; fewer than ready holds the replicas."),
    KeySpec("preset", None, f"A named PromQL recipe: {', '.join(sorted(PRESETS))}."),
    KeySpec("presetSelector", "", 'Label matchers inserted into the preset, e.g. namespace="llm".'),
    KeySpec("prometheus", "default", "Name of a Prometheus endpoint from the daemon's configuration."),
    KeySpec(
        "metricKind", None, "Types a single query: load (arrivals) or utilisation. Not with preset or per-kind queries."
    ),
    KeySpec(
        "capacityPerReplica",
        None,
        "Requests/s one replica serves; for utilisation alone, defaults to targetUtilization (replica units).",
    ),
    KeySpec("targetUtilization", None, "Per-replica fraction to hold for a utilisation signal (0.05-1)."),
    KeySpec("drainTime", "120s", "A backlog is drained within this time by extra replicas (10s-1h)."),
    KeySpec("replicaSource", "none", "Where ready replicas are read: kubernetes, prometheus or none."),
    KeySpec("workloadKind", "Deployment", "Kind of the scale target read with replicaSource kubernetes."),
    KeySpec("replicasQuery", None, "PromQL of the ready replicas (kube-state-metrics), replicaSource prometheus."),
    KeySpec("targetCoverage", "0.95", "Share of demand (or of steps) planned capacity must cover (0.5-0.999)."),
    KeySpec(
        "coverageBasis",
        DEFAULT_COVERAGE_BASIS,
        "What targetCoverage counts: steps (steps covered) or demand (served share).",
    ),
    KeySpec("leadTime", "180s", "Pod startup to ready: how far ahead replicas are planned (0s-1h)."),
    KeySpec("nodeLeadTime", "300s", "Extra time a new node takes, for the placeholder buffer (0s-2h)."),
    KeySpec("podsPerNode", "1", "Serving pods that fit on one node (1-256)."),
    KeySpec("maxBufferReplicas", "4", "Cap on placeholder replicas; 0 disables the node buffer."),
    KeySpec(
        "historyWindow",
        "7d",
        "History kept and warm-started from Prometheus (1h-35d). Unset, 7d or 2016 steps, whichever is "
        "longer (at most 35d).",
    ),
    KeySpec("step", "60s", "Collection and planning interval (10s-30m)."),
    KeySpec("model", "auto", f"Forecasting model: {', '.join(MODELS)}. auto selects by backtest."),
    KeySpec("minReplicas", "1", "Lowest replica count planned (0-10000)."),
    KeySpec("maxReplicas", "100", "Highest replica count planned (minReplicas-10000)."),
    KeySpec("activationThreshold", "0", "IsActive is true when forecast demand exceeds this value."),
    KeySpec("scaleDownStabilization", "300s", "Plan never drops below the highest plan in this window."),
    KeySpec("scaleDownPercentPerMinute", "50", "Largest share of replicas removed per minute (1-100)."),
    KeySpec("staleAfter", None, "Data older than this gives UNAVAILABLE (default: 3 steps, at least 90s)."),
    KeySpec("mode", "active", "active drives replicas; shadow returns the reactive answer and writes nothing."),
    KeySpec(
        "workloadName",
        None,
        "Scale target: its pod template for placeholder pods, its replicas with replicaSource kubernetes.",
    ),
    KeySpec("metricName", None, "Name of the external metric; default derived from the target."),
)
_KNOWN = {key.name: key for key in KEYS}


@dataclass(frozen=True, slots=True)
class ScalerSpec:
    """The typed configuration of one target."""

    query: str
    preset: str | None
    prometheus: str
    metric_kind: MetricKind
    capacity_per_replica: float
    target_coverage: float
    lead_time_seconds: float
    node_lead_time_seconds: float
    pods_per_node: int
    max_buffer_replicas: int
    history_window_seconds: float
    step_seconds: float
    model: str
    min_replicas: int
    max_replicas: int
    activation_threshold: float
    scale_down_stabilization_seconds: float
    scale_down_percent_per_minute: float
    stale_after_seconds: float
    shadow: bool
    workload_name: str | None
    metric_name: str | None
    signals: tuple[SignalQuery, ...] = ()
    """Every query the engine collects each step, the `pods` count included."""
    target_utilization: float | None = None
    """The per-replica fraction held for a utilisation signal; None without one."""
    drain_time_seconds: float = 120.0
    replica_source: ReplicaSource = ReplicaSource.NONE
    workload_kind: str = "Deployment"
    replicas_query: str | None = None
    coverage_basis: str = DEFAULT_COVERAGE_BASIS
    """What `target_coverage` counts: the share of demand served or of steps covered."""

    @property
    def signal_kinds(self) -> frozenset[SignalKind]:
        return frozenset(signal.kind for signal in self.signals)

    @property
    def lead_steps(self) -> int:
        return max(1, math.ceil(self.lead_time_seconds / self.step_seconds))

    @property
    def node_lead_steps(self) -> int:
        return max(1, math.ceil((self.lead_time_seconds + self.node_lead_time_seconds) / self.step_seconds))

    @property
    def history_points(self) -> int:
        return math.ceil(self.history_window_seconds / self.step_seconds)


def metadata_digest(metadata: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(sorted(metadata.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def target_key(namespace: str, name: str, metadata: Mapping[str, str]) -> TargetKey:
    return TargetKey(namespace=namespace, name=name, metadata_digest=metadata_digest(metadata))


class _Reader:
    """Typed access to raw metadata; every failure names its key."""

    def __init__(self, metadata: Mapping[str, str]) -> None:
        self._metadata = metadata

    def raw(self, key: str) -> str | None:
        return self._metadata[key].strip() if self.given(key) else _KNOWN[key].default

    def given(self, key: str) -> bool:
        """Whether the metadata sets `key`; a blank value takes the default."""
        value = self._metadata.get(key)
        return value is not None and value.strip() != ""

    def required(self, key: str) -> str:
        value = self.raw(key)
        if value is None:
            raise SpecError(key, "is required")
        return value

    def _convert(self, key: str, text: str, convert: Callable[[str], Any], expected: str) -> Any:
        try:
            return convert(text)
        except (ValueError, OverflowError):
            raise SpecError(key, f"{text!r} is not {expected}") from None

    def number(self, key: str, low: float, high: float, *, text: str | None = None) -> float:
        text = text if text is not None else self.required(key)
        value = float(self._convert(key, text, float, "a number"))
        if not math.isfinite(value) or not low <= value <= high:
            raise SpecError(key, f"{text!r} must be between {low:g} and {high:g}")
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        text = self.required(key)
        value = int(self._convert(key, text, int, "an integer"))
        if not low <= value <= high:
            raise SpecError(key, f"{text!r} must be between {low} and {high}")
        return value

    def duration(self, key: str, low: float, high: float, *, text: str | None = None) -> float:
        text = text if text is not None else self.required(key)
        value = float(self._convert(key, text, parse_duration, "a duration such as 90s, 5m, 2h or 7d"))
        if not low <= value <= high:
            raise SpecError(key, f"{text!r} must be between {low:g}s and {high:g}s")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.required(key)
        if value not in choices:
            raise SpecError(key, f"{value!r} is not one of: {', '.join(choices)}")
        return value

    def pattern(self, key: str, regex: re.Pattern[str], expected: str) -> str | None:
        value = self.raw(key)
        if value is not None and not regex.fullmatch(value):
            raise SpecError(key, f"{value!r} {expected}")
        return value


def _check_shape(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise SpecError("scalerMetadata", f"has {len(metadata)} keys; at most {MAX_METADATA_KEYS} allowed")
    characters = 0
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise SpecError(
                "scalerMetadata",
                f"a key of {len(key)} characters ({key[:32]!r}...); keys are at most {MAX_METADATA_KEY}",
            )
        if key not in _KNOWN:
            raise SpecError(key, f"unknown key; valid keys: {', '.join(sorted(_KNOWN))}")
        if len(value) > MAX_METADATA_VALUE:
            raise SpecError(key, f"value longer than {MAX_METADATA_VALUE} characters")
        characters += len(key) + len(value)
    if characters > MAX_METADATA_CHARACTERS:
        raise SpecError("scalerMetadata", f"holds {characters} characters; at most {MAX_METADATA_CHARACTERS} allowed")


def _promql(key: str, text: str) -> str:
    if "\x00" in text:
        raise SpecError(key, "contains a NUL character")
    return text


def _signals(reader: _Reader, step_seconds: float) -> tuple[tuple[SignalQuery, ...], str | None]:
    """The bundle of typed queries and the preset it came from, if any.

    A single `query` is typed by metricKind: load becomes one arrivals signal,
    utilisation one utilisation signal. A preset and per-kind queries say what each
    query measures, so metricKind is refused beside them.
    """
    query, preset = reader.raw("query"), reader.raw("preset")
    custom = tuple(
        SignalQuery(kind, _promql(key, text)) for kind, key in SIGNAL_KEYS.items() if (text := reader.raw(key))
    )
    shapes = sum((query is not None, preset is not None, bool(custom)))
    if shapes != 1:
        raise SpecError("query", "exactly one of 'query', 'preset' and the per-kind queries (arrivalsQuery...) is set")
    if custom:
        if reader.raw("metricKind") is not None:
            raise SpecError("metricKind", "applies to a single 'query'; per-kind queries say what they measure")
        if not any(signal.kind is not SignalKind.PODS for signal in custom):
            raise SpecError("podsQuery", "counts the pods of other signals; name at least one of them")
        return custom, None
    if query is not None:
        kind = _metric_kind(reader)
        return (SignalQuery(_signal_kind(kind), _promql("query", query)),), None
    assert preset is not None
    if preset not in PRESETS:
        raise SpecError("preset", f"{preset!r} is not one of: {', '.join(sorted(PRESETS))}")
    if reader.raw("metricKind") is not None:
        raise SpecError("metricKind", "applies to a single 'query'; a preset's queries say what they measure")
    selector = validate_selector(reader.raw("presetSelector") or "")
    return expand_preset(preset, selector, step_seconds), preset


def _signal_kind(kind: MetricKind) -> SignalKind:
    return SignalKind.UTILIZATION if kind is MetricKind.UTILISATION else SignalKind.ARRIVALS


def _metric_kind(reader: _Reader) -> MetricKind:
    text = reader.raw("metricKind")
    if text is None:
        return MetricKind.LOAD
    aliases = {"load": MetricKind.LOAD, "utilisation": MetricKind.UTILISATION, "utilization": MetricKind.UTILISATION}
    if text not in aliases:
        raise SpecError("metricKind", f"{text!r} is not one of: load, utilisation")
    return aliases[text]


def primary_signal(signals: tuple[SignalQuery, ...], *, preset: str | None = None) -> SignalQuery:
    """The query the single-series path and the inspection API show: a preset's named one."""
    if preset is not None:
        return signals[0]
    by_kind = {signal.kind: signal for signal in signals}
    return next(by_kind[kind] for kind in _PRIMARY_ORDER if kind in by_kind)


@dataclass(frozen=True, slots=True)
class _Units:
    metric_kind: MetricKind
    capacity_per_replica: float
    target_utilization: float | None


def _units(reader: _Reader, signals: tuple[SignalQuery, ...]) -> _Units:
    """Capacity in demand units and the utilisation target.

    A target whose only demand signal is a utilisation plans in replica units (demand =
    utilisation x ready replicas), so capacityPerReplica defaults to the target; the
    old form (a utilisation `query` whose capacityPerReplica is the target) still reads.
    """
    kinds = {signal.kind for signal in signals}
    has_utilisation = SignalKind.UTILIZATION in kinds
    utilisation_only = has_utilisation and not kinds & {SignalKind.ARRIVALS, SignalKind.COMPLETIONS}
    capacity_text = reader.raw("capacityPerReplica")
    capacity = None if capacity_text is None else reader.number("capacityPerReplica", 1e-9, 1e12, text=capacity_text)
    target_text = reader.raw("targetUtilization")
    target = None if target_text is None else reader.number("targetUtilization", 0.05, 1.0, text=target_text)
    if target is not None and not has_utilisation:
        raise SpecError("targetUtilization", "is set but the target has no utilisation signal")
    if has_utilisation and target is None:
        if capacity is None or not utilisation_only or capacity > 1.0:
            raise SpecError("targetUtilization", "is required with a utilisation signal (a fraction 0.05-1)")
        target = capacity
    if capacity is None:
        if not utilisation_only:
            raise SpecError("capacityPerReplica", "is required")
        capacity = target
    assert capacity is not None
    kind = MetricKind.UTILISATION if utilisation_only else MetricKind.LOAD
    return _Units(metric_kind=kind, capacity_per_replica=capacity, target_utilization=target)


@dataclass(frozen=True, slots=True)
class _Replicas:
    source: ReplicaSource
    workload_kind: str
    replicas_query: str | None


def _replica_source(reader: _Reader, signals: tuple[SignalQuery, ...]) -> _Replicas:
    """Where ready replicas come from; a utilisation needs them, so it is refused without."""
    source = ReplicaSource(reader.choice("replicaSource", tuple(ReplicaSource)))
    workload_kind = reader.choice("workloadKind", WORKLOAD_KINDS)
    replicas_query = reader.raw("replicasQuery")
    if source is ReplicaSource.KUBERNETES and reader.raw("workloadName") is None:
        raise SpecError("workloadName", "is required with replicaSource kubernetes: the workload to read")
    if source is ReplicaSource.PROMETHEUS and replicas_query is None:
        raise SpecError("replicasQuery", "is required with replicaSource prometheus")
    if source is not ReplicaSource.PROMETHEUS and replicas_query is not None:
        raise SpecError("replicasQuery", "is only read with replicaSource prometheus")
    if source is ReplicaSource.NONE and any(signal.kind is SignalKind.UTILIZATION for signal in signals):
        raise SpecError(
            "replicaSource",
            "a utilisation is a share of the ready replicas, so it needs them: set kubernetes or prometheus",
        )
    return _Replicas(
        source=source,
        workload_kind=workload_kind,
        replicas_query=None if replicas_query is None else _promql("replicasQuery", replicas_query),
    )


def default_history_seconds(step_seconds: float) -> float:
    """historyWindow when unset: 7 days, or the calibrator's window of steps where that is longer."""
    return min(MAX_HISTORY_SECONDS, max(DEFAULT_HISTORY_SECONDS, CALIBRATION_WINDOW_STEPS * step_seconds))


def parse_spec(metadata: Mapping[str, str]) -> ScalerSpec:
    """Validate scalerMetadata; raise SpecError naming the first bad key."""
    _check_shape(metadata)
    reader = _Reader(metadata)
    step = reader.duration("step", 10, 1800)
    signals, preset = _signals(reader, step)
    units = _units(reader, signals)
    replicas = _replica_source(reader, signals)
    prometheus = reader.pattern("prometheus", _ENDPOINT_NAME, "is not an endpoint name (lowercase DNS label)")
    lead = reader.duration("leadTime", 0, 3600)
    history = (
        reader.duration("historyWindow", 3600, MAX_HISTORY_SECONDS)
        if reader.given("historyWindow")
        else default_history_seconds(step)
    )
    if history / step > 200_000:
        raise SpecError("historyWindow", f"holds {history / step:.0f} steps; at most 200000 allowed")
    if history < 4 * max(lead, step):
        raise SpecError("historyWindow", "must span at least four lead times")
    min_replicas = reader.integer("minReplicas", 0, 10_000)
    max_replicas = reader.integer("maxReplicas", 0, 10_000)
    if max_replicas < min_replicas:
        raise SpecError("maxReplicas", f"{max_replicas} is below minReplicas {min_replicas}")
    stale_text = reader.raw("staleAfter")
    stale = (
        reader.duration("staleAfter", step, 86400, text=stale_text) if stale_text is not None else max(3 * step, 90.0)
    )
    return ScalerSpec(
        query=primary_signal(signals, preset=preset).query,
        preset=preset,
        prometheus=prometheus or "default",
        metric_kind=units.metric_kind,
        capacity_per_replica=units.capacity_per_replica,
        target_coverage=reader.number("targetCoverage", 0.5, 0.999),
        coverage_basis=reader.choice("coverageBasis", COVERAGE_BASES),
        lead_time_seconds=lead,
        node_lead_time_seconds=reader.duration("nodeLeadTime", 0, 7200),
        pods_per_node=reader.integer("podsPerNode", 1, 256),
        max_buffer_replicas=reader.integer("maxBufferReplicas", 0, 10_000),
        history_window_seconds=history,
        step_seconds=step,
        model=reader.choice("model", MODELS),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        activation_threshold=reader.number("activationThreshold", -1e12, 1e12),
        scale_down_stabilization_seconds=reader.duration("scaleDownStabilization", 0, 3600),
        scale_down_percent_per_minute=reader.number("scaleDownPercentPerMinute", 1, 100),
        stale_after_seconds=stale,
        shadow=reader.choice("mode", ("active", "shadow")) == "shadow",
        workload_name=reader.pattern("workloadName", _WORKLOAD_NAME, "is not a Kubernetes object name"),
        metric_name=reader.pattern("metricName", _METRIC_NAME, "must be letters, digits, '-' or '_' (max 63)"),
        signals=signals,
        target_utilization=units.target_utilization,
        drain_time_seconds=reader.duration("drainTime", 10, 3600),
        replica_source=replicas.source,
        workload_kind=replicas.workload_kind,
        replicas_query=replicas.replicas_query,
    )


def metric_name_for(key: TargetKey, spec: ScalerSpec) -> str:
    """The external metric name KEDA shows in the HPA; stable for a given target."""
    if spec.metric_name:
        return spec.metric_name
    return f"predicted-replicas-{key.metadata_digest[:10]}"


def keys_markdown_table() -> str:
    """The documentation table of every metadata key."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in KEYS:
        default = "(required)" if key.name == "capacityPerReplica" else (key.default or "")
        rows.append(f"| `{key.name}` | {f'`{default}`' if default else ''} | {key.description} |")
    return "\n".join(rows)
