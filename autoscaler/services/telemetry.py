"""Prometheus metrics: defined once here, documented in docs/metrics.md.

Two kinds of metric make up `/metrics`:

- process-level counters and histograms in a prometheus-client registry, updated as
  events happen by the gRPC service, the engine and the actuator (`observe_grpc`,
  `observe_fit`, ...);
- per-target gauges read from the engine's latest snapshot at scrape time by
  `TargetExposition`, so planning passes and gRPC calls never touch them.

The per-target part is rendered by our own code, not by a prometheus-client Collector:
with 1,000 targets it is 16,000 samples, which prometheus-client's generic formatter
took 0.6-0.8 s to write on the development machine, all of it blocking the event loop
that also answers KEDA. A target's lines change only when the engine publishes a new
snapshot of that target, so they are cached per target snapshot and a scrape re-renders
only the targets that changed (and data age, which moves with every snapshot).

The module-level functions update the process-wide default `Telemetry`; tests build
their own.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.engine.api import EngineView

PREFIX = "predictive_autoscaler"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
TARGET_LABELS = ("target", "namespace", "scaledobject")

# gRPC answers come from a snapshot lookup: most take well under a millisecond.
GRPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Fits range from a naive model (microseconds) to a GBM on weeks of history (seconds).
FIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UPDATE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def data_age_seconds(snapshot: EngineSnapshot, target: TargetSnapshot) -> float | None:
    """Age of the newest sample at the time the snapshot was generated.

    Measured against the snapshot, not the wall clock, so a simulated clock (the demo)
    reports ages in its own time.
    """
    if target.last_sample_at is None:
        return None
    return max(0.0, snapshot.generated_at - target.last_sample_at)


# ---- text exposition (format 0.0.4) -----------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)


def _value(number: float) -> str:
    return repr(float(number))


Sample = tuple[str, float | None]  # (extra label text such as 'horizon="lead"', value)


@dataclass(frozen=True, slots=True)
class TargetFamily:
    """One per-target metric family: its name, type, help and how to read it."""

    name: str
    kind: str
    help: str
    extra_labels: tuple[str, ...]
    samples: Callable[[TargetSnapshot], Iterable[Sample]]


def _one(read: Callable[[TargetSnapshot], float | None]) -> Callable[[TargetSnapshot], Iterable[Sample]]:
    return lambda target: (("", read(target)),)


def _decision(read: Callable[[Decision], float]) -> Callable[[TargetSnapshot], Iterable[Sample]]:
    return _one(lambda t: None if t.decision is None else read(t.decision))


def _info(target: TargetSnapshot) -> Iterable[Sample]:
    spec = target.spec
    labels = _labels(
        [
            ("metric_name", target.metric_name),
            ("metric_kind", spec.metric_kind.value),
            ("model", target.chosen_model or ""),
            ("mode", "shadow" if spec.shadow else "active"),
        ]
    )
    return ((labels, 1.0),)


def _status(target: TargetSnapshot) -> Iterable[Sample]:
    return ((f'status="{status.value}"', 1.0 if status is target.status else 0.0) for status in TargetStatus)


def _forecast(target: TargetSnapshot) -> Iterable[Sample]:
    decision = target.decision
    if decision is None:
        return ()
    return (('horizon="lead"', decision.forecast_at_lead), ('horizon="node"', decision.forecast_at_node_lead))


def _candidates(target: TargetSnapshot) -> Iterable[Sample]:
    return ((f'model="{_escape(s.model)}"', s.mase) for s in target.model_scores if s.failed is None)


def _observed(target: TargetSnapshot) -> float | None:
    return float(target.history_values[-1]) if target.history_values.size else None


DATA_AGE = f"{PREFIX}_data_age_seconds"

TARGET_FAMILIES: tuple[TargetFamily, ...] = (
    TargetFamily(
        f"{PREFIX}_target_info",
        "gauge",
        "Constant 1 per target; labels describe its metric, model and mode.",
        ("metric_name", "metric_kind", "model", "mode"),
        _info,
    ),
    TargetFamily(
        f"{PREFIX}_target_status", "gauge", "1 for the target's current status, 0 for the others.", ("status",), _status
    ),
    TargetFamily(
        f"{PREFIX}_observed_value", "gauge", "Newest collected value of the target's series.", (), _one(_observed)
    ),
    TargetFamily(
        f"{PREFIX}_forecast",
        "gauge",
        "Forecast at the planning quantile, at the pod lead time or the node lead time.",
        ("horizon",),
        _forecast,
    ),
    TargetFamily(
        f"{PREFIX}_forecast_quantile_level",
        "gauge",
        "Quantile level the plan is made at.",
        (),
        _decision(lambda d: d.quantile_level),
    ),
    TargetFamily(
        f"{PREFIX}_planned_replicas",
        "gauge",
        "Replicas the planner asks for.",
        (),
        _decision(lambda d: d.replicas),
    ),
    TargetFamily(
        f"{PREFIX}_reactive_replicas",
        "gauge",
        "Replicas the current demand alone needs.",
        (),
        _decision(lambda d: d.reactive_replicas),
    ),
    TargetFamily(
        f"{PREFIX}_buffer_replicas",
        "gauge",
        "Placeholder replicas keeping nodes warm.",
        (),
        _decision(lambda d: d.buffer_replicas),
    ),
    TargetFamily(
        f"{PREFIX}_decision_predictive",
        "gauge",
        "1 when the last decision used the forecast, 0 when it fell back to the reactive answer.",
        (),
        _decision(lambda d: 1.0 if d.predictive else 0.0),
    ),
    TargetFamily(
        f"{PREFIX}_forecast_error_mase",
        "gauge",
        "Rolling mean absolute scaled error of the chosen model at the lead time.",
        (),
        _one(lambda t: t.forecast_error_mase),
    ),
    TargetFamily(
        f"{PREFIX}_model_backtest_mase",
        "gauge",
        "Backtest MASE of each candidate model at the lead time.",
        ("model",),
        _candidates,
    ),
    TargetFamily(
        f"{PREFIX}_coverage_target_ratio",
        "gauge",
        "Share the plan must cover: of steps or of demand, per the target's coverageBasis.",
        (),
        _one(lambda t: t.target_coverage),
    ),
    TargetFamily(
        f"{PREFIX}_coverage_achieved_ratio",
        "gauge",
        "Share of recent steps (or of recent demand, per coverageBasis) the planned capacity covered.",
        (),
        _one(lambda t: t.achieved_coverage),
    ),
    TargetFamily(
        f"{PREFIX}_last_fit_duration_seconds",
        "gauge",
        "Duration of the target's last model fit.",
        (),
        _one(lambda t: t.last_fit_seconds),
    ),
    TargetFamily(
        f"{PREFIX}_last_update_duration_seconds",
        "gauge",
        "Duration of the target's last collect-forecast-plan pass.",
        (),
        _one(lambda t: t.last_update_seconds),
    ),
    TargetFamily(
        f"{PREFIX}_target_prometheus_query_errors_total",
        "counter",
        "Prometheus query errors while collecting this target.",
        (),
        _one(lambda t: t.prometheus_errors),
    ),
)
DATA_AGE_HELP = "Age of the newest sample when the snapshot was generated."
ENGINE_FAMILIES = (
    (f"{PREFIX}_snapshot_timestamp_seconds", "Engine clock time at which the served snapshot was generated."),
    (f"{PREFIX}_snapshot_generation", "Sequence number of the served snapshot."),
    (f"{PREFIX}_targets", "Registered targets by status."),
    (f"{PREFIX}_model_fits", "Model refits waiting for a fit worker, and running."),
)


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


@dataclass(frozen=True, slots=True)
class _RenderedTarget:
    snapshot: TargetSnapshot
    labels: str  # target="...",namespace="...",scaledobject="..."
    families: tuple[str, ...]  # the target's lines of each TARGET_FAMILIES entry


def _render_target(target: TargetSnapshot) -> _RenderedTarget:
    key = target.key
    labels = _labels(zip(TARGET_LABELS, (str(key), key.namespace, key.name), strict=True))
    blocks = []
    for family in TARGET_FAMILIES:
        lines = [
            f"{family.name}{{{labels}{',' + extra if extra else ''}}} {_value(value)}\n"
            for extra, value in family.samples(target)
            # Leave a series out rather than export NaN: absent reads as unknown in PromQL.
            if value is not None and math.isfinite(value)
        ]
        blocks.append("".join(lines))
    return _RenderedTarget(target, labels, tuple(blocks))


class TargetExposition:
    """Per-target and engine-wide metrics of the engine's latest snapshot, as text."""

    def __init__(self, engine: EngineView | None = None) -> None:
        self._engine = engine
        self._rendered: dict[TargetKey, _RenderedTarget] = {}
        self._encoded: tuple[EngineSnapshot, bytes] | None = None

    def watch(self, engine: EngineView | None) -> None:
        self._engine = engine
        self._rendered = {}
        self._encoded = None

    def encoded(self) -> bytes:
        """`render()` as UTF-8, encoded once per snapshot: every scrape of one snapshot
        shares the same bytes instead of holding a copy each.
        """
        engine = self._engine
        if engine is None:
            return b""
        snapshot = engine.snapshot()
        if self._encoded is None or self._encoded[0] is not snapshot:
            self._encoded = (snapshot, self._render(snapshot).encode())
        return self._encoded[1]

    def render(self) -> str:
        engine = self._engine
        return "" if engine is None else self._render(engine.snapshot())

    def _render(self, snapshot: EngineSnapshot) -> str:
        previous, current = self._rendered, {}
        for key, target in snapshot.targets.items():
            cached = previous.get(key)
            current[key] = cached if cached is not None and cached.snapshot is target else _render_target(target)
        self._rendered = current
        parts = [self._engine_part(snapshot)]
        for index, family in enumerate(TARGET_FAMILIES):
            parts.append(_header(family.name, family.kind, family.help))
            parts.extend(rendered.families[index] for rendered in current.values())
        parts.append(_header(DATA_AGE, "gauge", DATA_AGE_HELP))
        for rendered in current.values():
            age = data_age_seconds(snapshot, rendered.snapshot)
            if age is not None:
                parts.append(f"{DATA_AGE}{{{rendered.labels}}} {_value(age)}\n")
        return "".join(parts)

    @staticmethod
    def _engine_part(snapshot: EngineSnapshot) -> str:
        (
            (timestamp_name, timestamp_help),
            (generation_name, generation_help),
            (count_name, count_help),
            (fits_name, fits_help),
        ) = ENGINE_FAMILIES
        counts = dict.fromkeys(TargetStatus, 0)
        for target in snapshot.targets.values():
            counts[target.status] += 1
        return "".join(
            [
                _header(timestamp_name, "gauge", timestamp_help),
                f"{timestamp_name} {_value(snapshot.generated_at)}\n",
                _header(generation_name, "gauge", generation_help),
                f"{generation_name} {_value(snapshot.generation)}\n",
                _header(count_name, "gauge", count_help),
                *(f'{count_name}{{status="{status.value}"}} {_value(count)}\n' for status, count in counts.items()),
                _header(fits_name, "gauge", fits_help),
                f'{fits_name}{{state="waiting"}} {_value(snapshot.fits_waiting)}\n',
                f'{fits_name}{{state="running"}} {_value(snapshot.fits_running)}\n',
            ]
        )


# ---- the registry and event metrics -----------------------------------------------------


class Telemetry:
    """Every metric of the daemon: the event registry plus the snapshot exposition."""

    def __init__(self, engine: EngineView | None = None, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.targets = TargetExposition(engine)
        self._grpc_requests = Counter(
            f"{PREFIX}_grpc_requests",
            "External-scaler gRPC requests by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._grpc_latency = Histogram(
            f"{PREFIX}_grpc_request_duration_seconds",
            "External-scaler gRPC handling time by method.",
            ["method"],
            buckets=GRPC_BUCKETS,
            registry=self.registry,
        )
        self._fit = Histogram(
            f"{PREFIX}_fit_duration_seconds",
            "Model fit time by model.",
            ["model"],
            buckets=FIT_BUCKETS,
            registry=self.registry,
        )
        self._update = Histogram(
            f"{PREFIX}_update_duration_seconds",
            "Time of one collect-forecast-plan pass for one target.",
            buckets=UPDATE_BUCKETS,
            registry=self.registry,
        )
        self._prometheus_errors = Counter(
            f"{PREFIX}_prometheus_query_errors",
            "Failed Prometheus queries by configured endpoint and error kind.",
            ["endpoint", "kind"],
            registry=self.registry,
        )
        self._actuations = Counter(
            f"{PREFIX}_actuation_writes",
            "Placeholder (node buffer) writes to Kubernetes by result.",
            ["result"],
            registry=self.registry,
        )

    def watch(self, engine: EngineView | None) -> None:
        """Serve per-target metrics from this engine's snapshots (None: none)."""
        self.targets.watch(engine)

    def render(self) -> str:
        """The whole /metrics body (content type `CONTENT_TYPE`)."""
        return generate_latest(self.registry).decode() + self.targets.render()

    def exposition(self) -> tuple[bytes, bytes]:
        """The /metrics body in two parts: the event metrics, rendered now (small), and the
        per-target metrics, rendered once per snapshot and shared by every response.
        """
        return generate_latest(self.registry), self.targets.encoded()

    def observe_grpc(self, method: str, code: str | enum.Enum, seconds: float) -> None:
        """`code` is a name such as OK, or a status enum (grpc.StatusCode), exported by name."""
        self._grpc_requests.labels(method, code.name if isinstance(code, enum.Enum) else code).inc()
        self._grpc_latency.labels(method).observe(seconds)

    def observe_fit(self, model: str, seconds: float) -> None:
        self._fit.labels(model).observe(seconds)

    def observe_update(self, seconds: float) -> None:
        self._update.observe(seconds)

    def count_prometheus_error(self, endpoint: str, kind: str) -> None:
        self._prometheus_errors.labels(endpoint, kind).inc()

    def count_actuation(self, result: str) -> None:
        self._actuations.labels(result).inc()


_default = Telemetry()


def default_telemetry() -> Telemetry:
    return _default


def install_collector(engine: EngineView) -> None:
    """Export per-target metrics of this engine from the process-wide telemetry."""
    _default.watch(engine)


def uninstall_collector() -> None:
    _default.watch(None)


def observe_grpc(method: str, code: str | enum.Enum, seconds: float) -> None:
    """Observer hook for the gRPC service: one finished call."""
    _default.observe_grpc(method, code, seconds)


def observe_fit(model: str, seconds: float) -> None:
    _default.observe_fit(model, seconds)


def observe_update(seconds: float) -> None:
    _default.observe_update(seconds)


def count_prometheus_error(endpoint: str, kind: str) -> None:
    _default.count_prometheus_error(endpoint, kind)


def count_actuation(result: str) -> None:
    _default.count_actuation(result)
