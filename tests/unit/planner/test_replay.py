"""One answer per workload: a replica that replays the history equals one that never stopped."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.spec import ScalerSpec, parse_spec
from autoscaler.domain.types import Decision
from autoscaler.planner.pipeline import TargetPipeline
from autoscaler.planner.replay import StepColumns, decision_steps, rebuild_boundary, rebuilt_pipeline, replay
from autoscaler.sim.trace import parse_trace
from tests.traces import trace_path

STEP = 60.0
ORIGIN = 1_700_006_400.0  # a day boundary, so the trace's days are calendar days
DAY = 1440


def spec(model: str, window: str = "7d") -> ScalerSpec:
    return parse_spec(
        {
            "query": "sum(rate(requests_total[1m]))",
            "capacityPerReplica": "20",
            "step": "60s",
            "leadTime": "180s",
            "historyWindow": window,
            "model": model,
        }
    )


def trace_steps(days: float) -> list[StepSignals]:
    """The NASA web trace, with replica counts as a cluster would report them."""
    values = parse_trace(trace_path("nasa_http_jul95").read_text().splitlines()).values[: int(days * DAY)]
    return [
        StepSignals(
            timestamp=ORIGIN + row * STEP,
            values={SignalKind.ARRIVALS: float(value)},
            replicas=ReplicaCounts(ready=1 + row % 5),
        )
        for row, value in enumerate(values)
    ]


def live(pipeline: TargetPipeline, steps: list[StepSignals]) -> list[Decision]:
    """What the engine does at each step that arrives on time, between rebuilds."""
    decisions = []
    for step in steps:
        pipeline.observe_step(step)
        pipeline.refit_if_due()
        decisions.append(pipeline.decide(step.timestamp, observed_replicas=step.replicas))
    return decisions


class Replica:
    """One target in one daemon replica, without the I/O: `data` plays Prometheus.

    It warm-starts at row `start` as the engine does, then rebuilds at each boundary
    of the target's grid and otherwise takes the live transition.
    """

    def __init__(self, target: ScalerSpec, data: list[StepSignals], *, start: int, phase: int = 7) -> None:
        self.spec, self.data, self.phase = target, data, phase
        self.boundary = rebuild_boundary(target, refit_phase_steps=phase, at=data[start].timestamp)
        self.pipeline = rebuilt_pipeline(target, data[: start + 1], refit_phase_steps=phase, boundary=self.boundary)
        self.rebuilds = 0

    def answer(self, row: int) -> Decision:
        step = self.data[row]
        boundary = rebuild_boundary(self.spec, refit_phase_steps=self.phase, at=step.timestamp)
        if boundary > self.boundary:
            self.boundary, self.rebuilds = boundary, self.rebuilds + 1
            self.pipeline = rebuilt_pipeline(
                self.spec, self.data[: row + 1], refit_phase_steps=self.phase, boundary=boundary
            )
            assert self.pipeline.decision is not None
            return self.pipeline.decision
        return live(self.pipeline, [step])[0]


@pytest.mark.parametrize(
    ("model", "window", "days", "restart_day"), [("auto", "7d", 2.25, 2.0), ("ets", "1d", 3.5, 2.5)]
)
def test_a_restarted_replica_answers_as_the_one_that_never_stopped(
    model: str, window: str, days: float, restart_day: float
) -> None:
    """Whether the data began inside the window or long before it: the state is rebuilt
    exactly (model, calibrator, scale-down window), so every later answer is the same."""
    data = trace_steps(days)
    restart_at = int(restart_day * DAY)
    survivor = Replica(spec(model, window), data, start=0)
    answers = [survivor.answer(row) for row in range(1, len(data))]
    assert survivor.rebuilds >= 2  # it ran through boundaries, rebuilding at each
    restarted = Replica(spec(model, window), data, start=restart_at)
    assert restarted.pipeline.decision == answers[restart_at - 1]
    assert [restarted.answer(row) for row in range(restart_at + 1, len(data))] == answers[restart_at:]
    assert restarted.pipeline.achieved_coverage == survivor.pipeline.achieved_coverage
    assert restarted.pipeline.chosen_model == survivor.pipeline.chosen_model


def test_the_rebuild_boundary_is_where_the_refit_grid_is_crossed() -> None:
    target = spec("naive")
    for phase in (0, 7, 1439):
        pipeline = TargetPipeline(target, refit_phase_steps=phase)
        crossings = []
        for row, step in enumerate(trace_steps(4.5)):
            pipeline.observe_step(step)
            if pipeline.refit_if_due() and row > 3072:  # past the doublings of a short history
                crossings.append(step.timestamp)
        assert crossings
        for at in crossings:
            assert rebuild_boundary(target, refit_phase_steps=phase, at=at) == at
            assert rebuild_boundary(target, refit_phase_steps=phase, at=at - STEP) == at - DAY * STEP


def test_two_replicas_that_start_together_agree_at_every_step() -> None:
    steps = trace_steps(1.0)
    first, second = (TargetPipeline(spec("ets"), refit_phase_steps=3) for _ in range(2))
    assert live(first, steps) == live(second, steps)


def test_refits_follow_the_data_not_the_order_of_calls() -> None:
    """Refit steps are a function of the steps observed: a fit deferred past steps that
    decide nothing installs, caught up, the model a live fit would have served."""
    steps = trace_steps(1.0)
    deferred = TargetPipeline(spec("ets"), refit_phase_steps=0)
    replay(deferred, steps, decide_from=steps[-10].timestamp)
    straight = TargetPipeline(spec("ets"), refit_phase_steps=0)
    live(straight, steps[:-10])
    # No decision before the last ten steps in the first: the calibrator has less behind
    # it, but the model and the forecast it serves are the same.
    for step in steps[-10:]:
        straight.observe_step(step)
        straight.refit_if_due()
    straight.decide(steps[-1].timestamp)
    assert deferred.chosen_model == straight.chosen_model
    assert deferred.forecast is not None and straight.forecast is not None
    assert np.array_equal(deferred.forecast.values, straight.forecast.values)


def test_the_refit_grid_is_shifted_by_the_targets_phase() -> None:
    steps = trace_steps(2.5)
    refits: dict[int, list[int]] = {}
    for phase in (0, 360):
        pipeline = TargetPipeline(spec("naive"), refit_phase_steps=phase)
        refits[phase] = []
        for row, step in enumerate(steps):
            pipeline.observe_step(step)
            if pipeline.refit_if_due():
                refits[phase].append(row)
    # Doubling while short (24, 48, ... points since the last fit), and where the data
    # crosses a day boundary of the target's own grid: midnight, or 6 h earlier.
    growth = [23, 47, 95, 191, 383, 767]
    assert refits[0] == [*growth, 1439, 2879]
    assert refits[360] == [*growth, 1079, 2159, 2519]  # 2159: 1080 points doubled


def test_the_replay_decides_over_the_calibrators_window_and_the_lead_time() -> None:
    assert decision_steps(spec("naive")) == 2016 + 3 + 1


def test_steps_sent_as_columns_come_back_as_they_were() -> None:
    steps = [
        StepSignals(timestamp=60.0, values={SignalKind.ARRIVALS: 3.5, SignalKind.PODS: 2.0}, replicas=None),
        StepSignals(timestamp=120.0, values={SignalKind.ARRIVALS: 4.0}, replicas=ReplicaCounts(ready=2)),
        StepSignals(timestamp=180.0, values={}, replicas=ReplicaCounts(ready=3, desired=4)),
    ]
    assert StepColumns.of(steps).steps() == steps
    assert pickle.loads(pickle.dumps(StepColumns.of(steps))).steps() == steps
