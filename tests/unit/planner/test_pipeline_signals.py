"""TargetPipeline on typed signals: demand derived per step, the observed replicas, safety terms."""

from __future__ import annotations

import math

import pytest

from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.planner.pipeline import RefitSchedule, TargetPipeline
from autoscaler.planner.reactive import reactive_utilisation
from tests.unit.planner.fakes import make_spec, random_walk_factory

STEP = 60.0
SCHEDULE = RefitSchedule(min_points=10, growth=2.0, interval_seconds=3600.0, min_interval_steps=10)
UTILISATION_KEYS = {
    "query": "",
    "capacityPerReplica": "",
    "utilizationQuery": "avg(vllm:kv_cache_usage_perc)",
    "targetUtilization": "0.75",
    "replicaSource": "kubernetes",
    "workloadName": "llm",
    "minReplicas": "1",
    "maxReplicas": "200",
}
QUEUE_KEYS = {
    "query": "",
    "completionsQuery": "sum(rate(vllm:request_success_total[2m]))",
    "waitingQuery": "sum(vllm:num_requests_waiting)",
    "drainTime": "120s",
}


def make_pipeline(**keys: str) -> TargetPipeline:
    return TargetPipeline(make_spec(**keys), factory=random_walk_factory, schedule=SCHEDULE)


def step(pipeline: TargetPipeline, index: int, values: dict[SignalKind, float], replicas: ReplicaCounts) -> int:
    """The engine's loop for one step: observe, refit when due, decide on the observed replicas."""
    now = index * STEP
    pipeline.observe_step(StepSignals(timestamp=now, values=values, replicas=replicas))
    pipeline.refit_if_due()
    return pipeline.decide(now, observed_replicas=replicas).replicas


@pytest.mark.parametrize("history_steps", [1, 60])
def test_utilisation_after_a_restart_stays_near_the_ready_replicas(history_steps: int) -> None:
    """20 ready replicas at 70 % against a 75 % target: a fresh pipeline plans about 20, not minReplicas."""
    pipeline = make_pipeline(**UTILISATION_KEYS)
    ready = ReplicaCounts(ready=20, desired=20)
    plans = [step(pipeline, index, {SignalKind.UTILIZATION: 0.7}, ready) for index in range(history_steps)]
    assert all(19 <= replicas <= 21 for replicas in plans), plans
    assert pipeline.demand_estimate is not None
    assert pipeline.demand_estimate.value == pytest.approx(0.7 * 20)
    assert pipeline.decision is not None
    assert pipeline.decision.predictive is (history_steps > SCHEDULE.min_points)


def test_a_hpa_that_does_not_follow_is_read_back() -> None:
    """The HPA stops at its own maxReplicas 10: the next plan works from 10 ready, not from our 12."""
    pipeline = make_pipeline(**UTILISATION_KEYS)
    first = step(pipeline, 0, {SignalKind.UTILIZATION: 0.9}, ReplicaCounts(ready=10, desired=10))
    assert first == 12  # ceil(10 x 0.9 / 0.75)
    second = step(pipeline, 1, {SignalKind.UTILIZATION: 0.9}, ReplicaCounts(ready=10, desired=10))
    assert second == 12  # from the observed 10; the last plan (12) would give ceil(12 x 0.9 / 0.75) = 15
    # When no count arrives, the last observed one stands in, and the reason says so.
    pipeline.observe_step(StepSignals(timestamp=2 * STEP, values={SignalKind.UTILIZATION: 0.9}))
    decision = pipeline.decide(2 * STEP, observed_replicas=None)
    assert decision.replicas == 12
    assert "replicas not observed now: using 10 ready observed 60s ago" in decision.reason


@pytest.mark.parametrize(
    ("why", "observed", "expected"),
    [
        ("its own maxReplicas held it at 10", 10, 12),
        ("another trigger won with 16", 16, 20),
        ("KEDA's fallback set 6", 6, 8),
    ],
)
def test_the_next_plan_starts_from_what_the_hpa_did(why: str, observed: int, expected: int) -> None:
    """We asked for 12; whatever the HPA did instead, the next plan is ceil(observed x 0.9 / 0.75)."""
    pipeline = make_pipeline(**UTILISATION_KEYS, scaleDownStabilization="0s", scaleDownPercentPerMinute="100")
    assert step(pipeline, 0, {SignalKind.UTILIZATION: 0.9}, ReplicaCounts(ready=10, desired=10)) == 12
    replicas = ReplicaCounts(ready=observed, desired=observed)
    assert step(pipeline, 1, {SignalKind.UTILIZATION: 0.9}, replicas) == expected, why


def test_replicas_never_observed_assume_min_replicas_and_say_so() -> None:
    pipeline = make_pipeline()
    pipeline.observe_step(StepSignals(timestamp=0.0, values={SignalKind.ARRIVALS: 35.0}))
    decision = pipeline.decide(0.0, observed_replicas=None)
    assert decision.replicas == 4
    assert "replicas never observed: assuming minReplicas 1" in decision.reason


def test_saturated_utilisation_scales_up_at_least_as_fast_as_the_hpa() -> None:
    """Pinned at 100 %, demand is a lower bound; each plan is at least the HPA's answer on the same ready pods."""
    pipeline = make_pipeline(**UTILISATION_KEYS)
    ready = 4
    for index in range(8):
        hpa, _ = reactive_utilisation(value=1.0, target=0.75, current_replicas=ready, min_replicas=1, max_replicas=200)
        ours = step(pipeline, index, {SignalKind.UTILIZATION: 1.0}, ReplicaCounts(ready=ready, desired=ready))
        assert ours >= hpa > ready
        ready = ours
    assert ready >= 4 * (4 / 3) ** 7
    assert pipeline.decision is not None
    assert "demand at least" in pipeline.decision.reason


def test_completions_under_overload_scale_up_with_the_backlog_drained() -> None:
    """Completions are capped at 5 replicas x 10/s while the queue grows: the plan grows past 5."""
    pipeline = make_pipeline(**QUEUE_KEYS)
    replicas = ReplicaCounts(ready=5, desired=5)
    plans = []
    for index in range(6):
        values = {SignalKind.COMPLETIONS: 50.0, SignalKind.WAITING: 600.0 * index}
        plans.append(step(pipeline, index, values, replicas))
    assert plans[-1] > 5
    assert plans == sorted(plans)
    # 3000 waiting drain within 120 s at 10/s per replica: 3 replicas on top of the demand of 60/s.
    assert plans[-1] >= 6 + 3
    assert pipeline.decision is not None
    assert "drain 3000 waiting within 120s" in pipeline.decision.reason


def test_fewer_pods_reporting_than_ready_never_scales_down() -> None:
    pipeline = make_pipeline(**{"query": "", "arrivalsQuery": "a", "podsQuery": "p"})
    replicas = ReplicaCounts(ready=8, desired=8)
    plan = step(pipeline, 0, {SignalKind.ARRIVALS: 5.0, SignalKind.PODS: 5.0}, replicas)
    assert plan == 8
    assert pipeline.decision is not None
    assert "3 of 8 ready pods did not report: not scaling down below 8" in pipeline.decision.reason


def test_waiting_alone_grows_on_a_backlog_and_steps_down_on_an_empty_queue() -> None:
    pipeline = make_pipeline(**{"query": "", "waitingQuery": "w", "drainTime": "100s"})
    busy = step(pipeline, 0, {SignalKind.WAITING: 2000.0}, ReplicaCounts(ready=6, desired=6))
    assert busy == 8 + 2  # saturated: ceil(6 / 0.8), plus 2000 / (100 s x 10/s) replicas to drain
    decision = pipeline.decision
    assert decision is not None
    assert not decision.predictive
    assert "a queue alone only bounds demand" in decision.reason
    assert not pipeline.refit_due()
    # Past the stabilisation window, an empty queue steps down by a tenth, not to the queue's answer of 1.
    assert step(pipeline, 6, {SignalKind.WAITING: 0.0}, ReplicaCounts(ready=10, desired=10)) == 9
    assert pipeline.decision is not None
    assert "queue empty: demand fits, stepping down at most 10% to 9" in pipeline.decision.reason


def test_histories_keep_signals_demand_and_replicas_side_by_side() -> None:
    pipeline = make_pipeline(**QUEUE_KEYS)
    for index in range(3):
        values = {SignalKind.COMPLETIONS: 10.0, SignalKind.WAITING: 60.0 * index}
        step(pipeline, index, values, ReplicaCounts(ready=2 + index, desired=3 + index))
    timestamps, demand = pipeline.history()
    assert list(timestamps) == [0.0, 60.0, 120.0]
    assert list(demand) == pytest.approx([10.0, 11.0, 11.0])  # completions + growth of the queue
    signals = pipeline.signal_history()
    assert set(signals) == {SignalKind.COMPLETIONS, SignalKind.WAITING}
    assert list(signals[SignalKind.WAITING][1]) == [0.0, 60.0, 120.0]
    replica_times, ready, desired = pipeline.replica_history()
    assert list(replica_times) == [0.0, 60.0, 120.0]
    assert (list(ready), list(desired)) == ([2.0, 3.0, 4.0], [3.0, 4.0, 5.0])
    assert not math.isnan(demand[-1])
