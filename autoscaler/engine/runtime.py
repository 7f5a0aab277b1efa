"""Mutable per-target state owned by the engine, and its immutable published view."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace

from autoscaler.domain.snapshot import TargetSnapshot, TargetStatus
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.planner.pipeline import TargetPipeline


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
    missing_since: float | None = None
    """The first step of the current run of empty or NaN answers, fetched again once it ends."""
    stale_entry: int | None = None
    """The engine's pending check of when this target turns STALE, if it has one."""
    last_sample_at: float | None = None
    last_contact: float = 0.0
    last_fit_seconds: float | None = None
    last_update_seconds: float | None = None
    fit_task: asyncio.Task[None] | None = None
    view: TargetSnapshot | None = None
    """The newest published view, or the one built for the next publish."""

    @classmethod
    def create(cls, *, key: TargetKey, spec: ScalerSpec, metric_name: str) -> TargetRuntime:
        return cls(key=key, spec=spec, metric_name=metric_name, pipeline=TargetPipeline(spec))

    def observe(self, timestamp: float, value: float) -> None:
        self.pipeline.observe(timestamp, value)
        if math.isfinite(value) and (self.last_sample_at is None or timestamp > self.last_sample_at):
            self.last_sample_at = timestamp


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
    )
