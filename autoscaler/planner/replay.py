"""Planning state as a function of a bounded window of data, rebuilt by replay.

A daemon that restarts, or a second replica, must give KEDA the answer that a replica
which never stopped gives. The state behind that answer (the model, the calibrator's
scores and level, the scale-down window) is built step by step by `TargetPipeline`,
and every transition is a function of the steps observed. But some of it, the
calibrator's level above all, remembers every step since the target began: no replay
of a window could give that back.

So the state is made a function of a bounded window by definition. Once a day, at a
boundary of the target's refit grid (`rebuild_boundary`), every replica rebuilds the
target's pipeline: it replays the history window that ends at the boundary through
the transitions the engine makes live (observe the step, refit when the data calls for
it, decide), and carries on from there. The state at any step is then:

    replay(the window ending at the last boundary) + the live steps since,

whichever replica computes it and whenever it started: a warm start makes exactly that
replay (reading the window before the last boundary as well as the steps since), and a
replica that has run for weeks makes it at each boundary.

The replay decides over the calibrator's window of scored predictions and the lead time
before it (`decision_steps`); a model due before that span would serve no replayed
decision, so its fit is deferred to the span's first step and installed caught up, as
the engine installs any fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import FloatArray
from autoscaler.planner.calibration import DEFAULT_WINDOW
from autoscaler.planner.pipeline import (
    FittedModel,
    RefitInputs,
    RefitSchedule,
    TargetPipeline,
    fit_for,
    last_grid_end,
)


def decision_steps(spec: ScalerSpec) -> int:
    """The steps of decisions a replay makes: the calibrator's window and the lead time before it."""
    return DEFAULT_WINDOW + spec.lead_steps + 1


def rebuild_boundary(spec: ScalerSpec, *, refit_phase_steps: int, at: float) -> float:
    """The timestamp of the newest step at or before `at` where the daily grid puts a rebuild.

    The step whose data completes a grid interval: the one the pipeline's own refit grid
    crosses at (`TargetPipeline.refit_due`), shifted by the target's phase.
    """
    step = spec.step_seconds
    end_step = math.floor(at / step + 1e-9) + 1  # the data's end step once the step at `at` is in
    interval = RefitSchedule().interval_steps(step)
    return (last_grid_end(end_step, spacing=interval, phase=refit_phase_steps) - 1) * step


def window_start(spec: ScalerSpec, boundary: float) -> float:
    """The first step of the history window that a rebuild at `boundary` replays."""
    return boundary - (spec.history_points - 1) * spec.step_seconds


def replay(
    pipeline: TargetPipeline,
    steps: Sequence[StepSignals],
    *,
    decide_from: float,
    fit: Callable[[RefitInputs], FittedModel] = fit_for,
) -> None:
    """Advance `pipeline` through `steps` (oldest first) as the engine would have, live.

    Steps before `decide_from` are observed only, and their due fits deferred.
    """
    deferred: RefitInputs | None = None
    for step in steps:
        pipeline.observe_step(step)
        deciding = step.timestamp >= decide_from
        if pipeline.refit_due():
            deferred = pipeline.refit_inputs()
        if deciding:
            if deferred is not None:
                pipeline.install(fit(deferred))
                deferred = None
            pipeline.decide(step.timestamp, observed_replicas=step.replicas)
    if deferred is not None:  # no step to decide at: keep the model for the first live one
        pipeline.install(fit(deferred))


@dataclass(frozen=True, slots=True)
class StepColumns:
    """Steps as columns, to send to a fit worker: a list of 10,080 `StepSignals` took
    46 ms to pickle, in the process pool's feeder thread, which holds the GIL the event
    loop needs; these arrays take well under one. NaN marks what a step lacks: a value
    (a NaN value is no sample anyway) or a replica count."""

    timestamps: FloatArray
    values: dict[SignalKind, FloatArray]
    ready: FloatArray
    desired: FloatArray

    @classmethod
    def of(cls, steps: Sequence[StepSignals]) -> StepColumns:
        count = len(steps)

        def column(read: Callable[[StepSignals], float]) -> FloatArray:
            return np.fromiter((read(step) for step in steps), dtype=np.float64, count=count)

        def value_of(kind: SignalKind) -> Callable[[StepSignals], float]:
            return lambda step: step.values.get(kind, math.nan)

        kinds = {kind for step in steps for kind in step.values}
        return cls(
            timestamps=column(lambda step: step.timestamp),
            values={kind: column(value_of(kind)) for kind in kinds},
            ready=column(lambda step: math.nan if step.replicas is None else step.replicas.ready),
            desired=column(lambda step: _desired(step.replicas)),
        )

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def last_timestamp(self) -> float:
        return float(self.timestamps[-1])

    def steps(self) -> list[StepSignals]:
        return [
            StepSignals(
                timestamp=float(timestamp),
                values={kind: float(values[row]) for kind, values in self.values.items() if math.isfinite(values[row])},
                replicas=_counts(float(self.ready[row]), float(self.desired[row])),
            )
            for row, timestamp in enumerate(self.timestamps)
        ]


def _desired(replicas: ReplicaCounts | None) -> float:
    return math.nan if replicas is None or replicas.desired is None else replicas.desired


def _counts(ready: float, desired: float) -> ReplicaCounts | None:
    if not math.isfinite(ready):
        return None
    return ReplicaCounts(ready=int(ready), desired=int(desired) if math.isfinite(desired) else None)


def rebuilt_from_columns(
    spec: ScalerSpec, columns: StepColumns, *, refit_phase_steps: int, boundary: float
) -> TargetPipeline:
    """`rebuilt_pipeline` over steps sent as columns: what the engine hands a fit worker."""
    return rebuilt_pipeline(spec, columns.steps(), refit_phase_steps=refit_phase_steps, boundary=boundary)


def rebuilt_pipeline(
    spec: ScalerSpec, steps: Sequence[StepSignals], *, refit_phase_steps: int, boundary: float
) -> TargetPipeline:
    """A fresh pipeline replayed through `steps`: the window that ends at `boundary` (as
    `window_start` gives it), then every step after it, each decided.

    One call, picklable arguments: the engine runs it in a fit worker.
    """
    pipeline = TargetPipeline(spec, refit_phase_steps=refit_phase_steps)
    decide_from = boundary - (decision_steps(spec) - 1) * spec.step_seconds
    replay(
        pipeline, [step for step in steps if step.timestamp >= window_start(spec, boundary)], decide_from=decide_from
    )
    return pipeline
