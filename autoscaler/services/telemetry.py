"""Prometheus metrics: defined once here, documented in docs/metrics.md.

Two kinds of metric live in one registry:

- process-level counters and histograms that the gRPC service, the engine and the
  Kubernetes adapter update as events happen (`observe_grpc`, `observe_fit`, ...);
- per-target gauges that `SnapshotCollector` reads from the engine's latest snapshot
  when Prometheus scrapes, so the planning loop and the gRPC hot path never touch them.

The module-level functions update the process-wide default `Telemetry`; tests build
their own `Telemetry` with a private registry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.engine.api import EngineView

PREFIX = "predictive_autoscaler"
TARGET_LABELS = ("target", "namespace", "scaledobject")

# gRPC answers come from a snapshot lookup: most take well under a millisecond.
GRPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Fits range from a naive model (microseconds) to a GBM on weeks of history (seconds).
FIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UPDATE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def target_label_values(target: TargetSnapshot) -> tuple[str, str, str]:
    key = target.key
    return str(key), key.namespace, key.name


def data_age_seconds(snapshot: EngineSnapshot, target: TargetSnapshot) -> float | None:
    """Age of the newest sample at the time the snapshot was generated.

    Measured against the snapshot, not the wall clock, so a simulated clock (the demo)
    reports ages in its own time.
    """
    if target.last_sample_at is None:
        return None
    return max(0.0, snapshot.generated_at - target.last_sample_at)


class _Families:
    """The per-target metric families of one scrape."""

    def __init__(self) -> None:
        labels = list(TARGET_LABELS)
        self.info = GaugeMetricFamily(
            f"{PREFIX}_target_info",
            "Constant 1 per target; labels describe its metric, model and mode.",
            labels=[*labels, "metric_name", "metric_kind", "model", "mode"],
        )
        self.status = GaugeMetricFamily(
            f"{PREFIX}_target_status",
            "1 for the target's current status, 0 for the others.",
            labels=[*labels, "status"],
        )
        self.observed = GaugeMetricFamily(
            f"{PREFIX}_observed_value", "Newest collected value of the target's series.", labels=labels
        )
        self.forecast = GaugeMetricFamily(
            f"{PREFIX}_forecast",
            "Forecast at the planning quantile, at the pod lead time or the node lead time.",
            labels=[*labels, "horizon"],
        )
        self.quantile = GaugeMetricFamily(
            f"{PREFIX}_forecast_quantile_level", "Quantile level the plan is made at.", labels=labels
        )
        self.planned = GaugeMetricFamily(
            f"{PREFIX}_planned_replicas", "Replicas the planner asks for.", labels=labels
        )
        self.reactive = GaugeMetricFamily(
            f"{PREFIX}_reactive_replicas", "Replicas the current demand alone needs.", labels=labels
        )
        self.buffer = GaugeMetricFamily(
            f"{PREFIX}_buffer_replicas", "Placeholder replicas keeping nodes warm.", labels=labels
        )
        self.predictive = GaugeMetricFamily(
            f"{PREFIX}_decision_predictive",
            "1 when the last decision used the forecast, 0 when it fell back to the reactive answer.",
            labels=labels,
        )
        self.mase = GaugeMetricFamily(
            f"{PREFIX}_forecast_error_mase",
            "Rolling mean absolute scaled error of the chosen model at the lead time.",
            labels=labels,
        )
        self.candidate_mase = GaugeMetricFamily(
            f"{PREFIX}_model_backtest_mase",
            "Backtest MASE of each candidate model at the lead time.",
            labels=[*labels, "model"],
        )
        self.coverage_target = GaugeMetricFamily(
            f"{PREFIX}_coverage_target_ratio", "Share of steps the plan must cover.", labels=labels
        )
        self.coverage_achieved = GaugeMetricFamily(
            f"{PREFIX}_coverage_achieved_ratio",
            "Share of recent steps on which the planned capacity covered demand.",
            labels=labels,
        )
        self.data_age = GaugeMetricFamily(
            f"{PREFIX}_data_age_seconds",
            "Age of the newest sample when the snapshot was generated.",
            labels=labels,
        )
        self.fit_seconds = GaugeMetricFamily(
            f"{PREFIX}_last_fit_duration_seconds", "Duration of the target's last model fit.", labels=labels
        )
        self.update_seconds = GaugeMetricFamily(
            f"{PREFIX}_last_update_duration_seconds",
            "Duration of the target's last collect-forecast-plan pass.",
            labels=labels,
        )
        self.query_errors = CounterMetricFamily(
            f"{PREFIX}_target_prometheus_query_errors",
            "Prometheus query errors while collecting this target.",
            labels=labels,
        )

    def add(self, snapshot: EngineSnapshot, target: TargetSnapshot) -> None:
        labels = list(target_label_values(target))
        spec = target.spec
        self.info.add_metric(
            [
                *labels,
                target.metric_name,
                spec.metric_kind.value,
                target.chosen_model or "",
                "shadow" if spec.shadow else "active",
            ],
            1.0,
        )
        for status in TargetStatus:
            self.status.add_metric([*labels, status.value], 1.0 if status is target.status else 0.0)
        if target.history_values.size:
            _add_finite(self.observed, labels, float(target.history_values[-1]))
        decision = target.decision
        if decision is not None:
            _add_finite(self.forecast, [*labels, "lead"], decision.forecast_at_lead)
            _add_finite(self.forecast, [*labels, "node"], decision.forecast_at_node_lead)
            self.quantile.add_metric(labels, decision.quantile_level)
            self.planned.add_metric(labels, decision.replicas)
            self.reactive.add_metric(labels, decision.reactive_replicas)
            self.buffer.add_metric(labels, decision.buffer_replicas)
            self.predictive.add_metric(labels, 1.0 if decision.predictive else 0.0)
        _add_finite(self.mase, labels, target.forecast_error_mase)
        for score in target.model_scores:
            _add_finite(self.candidate_mase, [*labels, score.model], score.mase)
        self.coverage_target.add_metric(labels, target.target_coverage)
        _add_finite(self.coverage_achieved, labels, target.achieved_coverage)
        _add_finite(self.data_age, labels, data_age_seconds(snapshot, target))
        _add_finite(self.fit_seconds, labels, target.last_fit_seconds)
        _add_finite(self.update_seconds, labels, target.last_update_seconds)
        self.query_errors.add_metric(labels, target.prometheus_errors)

    def __iter__(self) -> Iterator[Metric]:
        return iter(vars(self).values())


def _add_finite(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
    """Leave a series out rather than export NaN: absent reads as 'unknown' in PromQL."""
    if value is not None and math.isfinite(value):
        family.add_metric(labels, value)


class SnapshotCollector(Collector):
    """Per-target metrics read from the engine's latest snapshot at scrape time."""

    def __init__(self, engine: EngineView | None = None) -> None:
        self._engine = engine

    def watch(self, engine: EngineView) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        families = _Families()
        snapshot_time = GaugeMetricFamily(
            f"{PREFIX}_snapshot_timestamp_seconds",
            "Engine clock time at which the served snapshot was generated.",
        )
        generation = GaugeMetricFamily(
            f"{PREFIX}_snapshot_generation", "Sequence number of the served snapshot."
        )
        targets = GaugeMetricFamily(
            f"{PREFIX}_targets", "Registered targets by status.", labels=["status"]
        )
        if self._engine is not None:
            snapshot = self._engine.snapshot()
            snapshot_time.add_metric([], snapshot.generated_at)
            generation.add_metric([], snapshot.generation)
            counts = dict.fromkeys(TargetStatus, 0)
            for target in snapshot.targets.values():
                counts[target.status] += 1
                families.add(snapshot, target)
            for status, count in counts.items():
                targets.add_metric([status.value], count)
        yield snapshot_time
        yield generation
        yield targets
        yield from families

    def describe(self) -> Iterable[Metric]:
        # Describing without an engine keeps registration free of snapshot reads.
        return []


class Telemetry:
    """One registry with every metric of the daemon."""

    def __init__(self, engine: EngineView | None = None, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.snapshots = SnapshotCollector(engine)
        self.registry.register(self.snapshots)
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

    def watch(self, engine: EngineView) -> None:
        """Serve per-target metrics from this engine's snapshots."""
        self.snapshots.watch(engine)

    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        self._grpc_requests.labels(method, code).inc()
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


def observe_grpc(method: str, code: str, seconds: float) -> None:
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
