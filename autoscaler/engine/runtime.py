"""Mutable per-target state owned by the engine, and its immutable published view."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

from autoscaler.demand.derive import DemandEstimate
from autoscaler.domain.signals import SignalKind, StepSignals
from autoscaler.domain.snapshot import (
    DemandDerivation,
    ReplicaHistory,
    SignalHistory,
    TargetSnapshot,
    TargetStatus,
)
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.planner.pipeline import RefitSchedule, TargetPipeline


@dataclass(slots=True)
class TargetRuntime:
    """Engine-side state of one target; only the engine's event loop mutates it."""

    key: TargetKey
    spec: ScalerSpec
    metric_name: str
    pipeline: TargetPipeline
    warm: bool = False
    decision: Decision | None = None
    decided_at: float | None = None
    last_error: str | None = None
    source_errors: int = 0
    collected_until: float | None = None
    rebuilt_boundary: float | None = None
    """The rebuild boundary whose window the pipeline was last replayed from (None before the warm start)."""
    missing_since: float | None = None
    """The first step of the current run of empty or NaN answers, fetched again once it ends."""
    stale_entry: int | None = None
    """The engine's pending check of when this target turns STALE, if it has one."""
    last_sample_at: float | None = None
    last_contact: float = 0.0
    last_fit_seconds: float | None = None
    last_update_seconds: float | None = None
    view: TargetSnapshot | None = None
    """The newest published view, or the one built for the next publish."""

    @classmethod
    def create(cls, *, key: TargetKey, spec: ScalerSpec, metric_name: str) -> TargetRuntime:
        pipeline = TargetPipeline(spec, refit_phase_steps=refit_phase_steps(key, spec))
        return cls(key=key, spec=spec, metric_name=metric_name, pipeline=pipeline)

    def observe(self, step: StepSignals) -> None:
        """Fold one step in; a step of real values moves freshness up to its time at most."""
        self.pipeline.observe_step(step)
        timestamp = step.timestamp
        if step.values and (self.last_sample_at is None or timestamp > self.last_sample_at):
            self.last_sample_at = timestamp


def refit_phase_steps(key: TargetKey, spec: ScalerSpec) -> int:
    """The target's offset on the refit grid: from a stable hash of its key, so a fleet's
    refits spread over the interval and every replica refits a target at the same steps."""
    return zlib.crc32(str(key).encode()) % RefitSchedule().interval_steps(spec.step_seconds)


def has_fresh_sample(runtime: TargetRuntime, now: float) -> bool:
    """A real sample younger than staleAfter."""
    last_sample = runtime.last_sample_at
    return last_sample is not None and now - last_sample <= runtime.spec.stale_after_seconds


def target_status(runtime: TargetRuntime, now: float) -> TargetStatus:
    """READY only with a decision and a real sample younger than staleAfter."""
    if runtime.decision is None:
        return TargetStatus.ERROR if runtime.last_error and runtime.source_errors else TargetStatus.WARMING
    if not has_fresh_sample(runtime, now):
        return TargetStatus.STALE
    return TargetStatus.READY


def build_target_snapshot(
    runtime: TargetRuntime, *, now: float, reuse: TargetSnapshot | None, shown: int
) -> TargetSnapshot:
    """A fresh view when the target changed; otherwise the old one with a re-derived status."""
    status = target_status(runtime, now)
    if reuse is not None and reuse.status is status:
        return reuse
    if reuse is not None:
        return replace(reuse, status=status)
    pipeline = runtime.pipeline
    selection = pipeline.selection
    timestamps, values = pipeline.history()
    return TargetSnapshot(
        key=runtime.key,
        spec=runtime.spec,
        metric_name=runtime.metric_name,
        status=status,
        updated_at=now,
        last_sample_at=runtime.last_sample_at,
        decision=runtime.decision,
        decided_at=runtime.decided_at,
        forecast=pipeline.forecast,
        forecast_start=pipeline.forecast_start,
        history_timestamps=timestamps[-shown:],
        history_values=values[-shown:],
        chosen_model=pipeline.chosen_model,
        model_scores=selection.scores if selection else (),
        seasonal_periods=selection.seasonal_periods if selection else (),
        target_coverage=runtime.spec.target_coverage,
        achieved_coverage=pipeline.achieved_coverage,
        forecast_error_mase=pipeline.forecast_error_mase,
        last_error=runtime.last_error,
        last_fit_seconds=runtime.last_fit_seconds,
        last_update_seconds=runtime.last_update_seconds,
        prometheus_errors=runtime.source_errors,
        observed_replicas=pipeline.observed_replicas,
        signal_histories=_signal_histories(pipeline, shown),
        replica_history=_replica_history(pipeline, shown),
        demand_derivation=_derivation(pipeline.demand_estimate),
    )


def _signal_histories(pipeline: TargetPipeline, shown: int) -> tuple[SignalHistory, ...]:
    """Each raw signal's newest `shown` steps (read-only views), in SignalKind order."""
    signals = pipeline.signal_history()
    return tuple(
        SignalHistory(kind=kind, timestamps=signals[kind][0][-shown:], values=signals[kind][1][-shown:])
        for kind in SignalKind
        if kind in signals
    )


def _replica_history(pipeline: TargetPipeline, shown: int) -> ReplicaHistory | None:
    timestamps, ready, desired = pipeline.replica_history()
    if timestamps.size == 0:
        return None
    return ReplicaHistory(timestamps=timestamps[-shown:], ready=ready[-shown:], desired=desired[-shown:])


def _derivation(estimate: DemandEstimate | None) -> DemandDerivation | None:
    if estimate is None:
        return None
    return DemandDerivation(
        value=estimate.value,
        source=estimate.source,
        description=estimate.describe(),
        lower_bound=estimate.lower_bound,
        saturated=estimate.saturated,
        missing_pods=estimate.missing_pods,
    )
