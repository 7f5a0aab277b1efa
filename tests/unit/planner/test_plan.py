from __future__ import annotations

import math

import pytest

from autoscaler.domain.types import Decision
from autoscaler.planner.plan import Calibration, PlannerState, damp, plan
from tests.unit.planner.fakes import flat_forecast, make_spec

NO_OFFSET = Calibration(level=0.95, offset=0.0)
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def decide(
    path: list[float],
    *,
    latest: float = 50.0,
    current: int = 5,
    offset: float = 0.0,
    spec_keys: dict[str, str] | None = None,
) -> tuple[Decision, PlannerState]:
    spec = make_spec(**(spec_keys or {}))
    return plan(
        now=NOW,
        spec=spec,
        latest_value=latest,
        forecast=flat_forecast(path),
        calibration=Calibration(level=0.95, offset=offset),
        current_replicas=current,
        state=PlannerState(),
    )


# Lead 180 s at 60 s steps: the need is read at forecast step 4; the node buffer looks
# to step 9 (180 + 300 s). Capacity 10 per replica.
PLAN_CASES = [
    # name, path (9 steps), latest, current, spec keys, replicas, buffer
    ("need at lead time", [50, 60, 70, 80, 80, 80, 80, 80, 80], 50, 5, {}, 8, 0),
    ("never below reactive", [10] * 9, 120, 5, {}, 12, 0),
    ("keeps current for nearer demand", [90, 40, 40, 40, 40, 40, 40, 40, 40], 40, 9, {}, 9, 0),
    ("no early scale-up for nearer demand", [90, 40, 40, 40, 40, 40, 40, 40, 40], 40, 4, {}, 4, 0),
    ("max replicas", [5000] * 9, 50, 5, {"maxReplicas": "20"}, 20, 0),
    ("min replicas", [0] * 9, 0, 5, {"minReplicas": "3"}, 3, 0),
    ("buffer for node lead", [50, 50, 50, 50, 60, 70, 80, 90, 100], 50, 5, {}, 5, 4),
    ("buffer capped", [50, 50, 50, 50, 60, 70, 80, 90, 100], 50, 5, {"maxBufferReplicas": "2"}, 5, 2),
    ("buffer disabled", [50, 50, 50, 50, 60, 70, 80, 90, 100], 50, 5, {"maxBufferReplicas": "0"}, 5, 0),
    ("buffer within max", [50, 50, 50, 50, 60, 70, 80, 90, 100], 50, 5, {"maxReplicas": "6"}, 5, 1),
    ("negative forecast floors at 0", [-30] * 9, 0, 1, {"minReplicas": "0"}, 0, 0),
    ("all zeros", [0] * 9, 0, 0, {"minReplicas": "0"}, 0, 0),
]


@pytest.mark.parametrize(
    ("name", "path", "latest", "current", "keys", "replicas", "buffer"), PLAN_CASES, ids=[c[0] for c in PLAN_CASES]
)
def test_plan_rules(
    *, name: str, path: list[float], latest: float, current: int, keys: dict[str, str], replicas: int, buffer: int
) -> None:
    decision, _ = decide(path, latest=latest, current=current, spec_keys=keys)
    assert decision.predictive
    assert decision.replicas == replicas
    assert decision.buffer_replicas == buffer
    assert decision.replicas >= decision.reactive_replicas


def test_offset_from_calibration_raises_the_need() -> None:
    plain, _ = decide([50] * 9)
    calibrated, _ = decide([50] * 9, offset=25.0)
    assert (plain.replicas, calibrated.replicas) == (5, 8)
    assert calibrated.forecast_at_lead == pytest.approx(75.0)
    assert "calibrated +25" in calibrated.reason


def test_reason_reads_like_a_sentence() -> None:
    decision, _ = decide([50, 60, 70, 412, 412, 412, 412, 412, 412], spec_keys={"capacityPerReplica": "20"})
    assert "forecast p95" in decision.reason
    assert "of 412 at +180s needs 21 replicas (capacity 20/replica); reactive needs" in decision.reason


def test_utilisation_demand_is_planned_in_replica_units_not_from_current() -> None:
    """Demand from a utilisation is busy replicas; the plan divides by the target and
    never multiplies the current replicas again (the runaway of issue 14)."""
    keys = {
        "query": "avg(kv_cache_usage)",
        "metricKind": "utilisation",
        "capacityPerReplica": "",
        "targetUtilization": "0.6",
        "replicaSource": "kubernetes",
        "workloadName": "llm",
    }
    # 2.7 busy replicas at the lead time need ceil(2.7 / 0.6) = 5, whatever the current 40 replicas.
    decision, _ = decide([2.7] * 9, latest=2.7, current=40, spec_keys={**keys, "scaleDownPercentPerMinute": "100"})
    assert decision.replicas == 5
    assert "needs 5 replicas" in decision.reason


@pytest.mark.parametrize(
    ("forecast_missing", "cold_start", "fragment"),
    [(True, None, "no forecast available"), (False, "cold start: 3 steps of history", "cold start: 3 steps")],
)
def test_cold_start_is_the_reactive_answer(forecast_missing: bool, cold_start: str | None, fragment: str) -> None:
    spec = make_spec()
    decision, state = plan(
        now=NOW,
        spec=spec,
        latest_value=73.0,
        forecast=None if forecast_missing else flat_forecast([500] * 9),
        calibration=NO_OFFSET,
        current_replicas=2,
        state=PlannerState(),
        cold_start=cold_start,
    )
    assert not decision.predictive
    assert decision.replicas == decision.reactive_replicas == 8
    assert decision.buffer_replicas == 0
    assert math.isnan(decision.forecast_at_lead)
    assert fragment in decision.reason and "reactive answer" in decision.reason
    assert state.recommendations == ((NOW, 8),)


def test_non_finite_forecast_falls_back_to_reactive() -> None:
    decision, _ = decide([math.nan] * 9, latest=73.0)
    assert not decision.predictive
    assert decision.replicas == 8
    assert "not finite" in decision.reason


def test_stabilisation_window_holds_the_highest_recent_plan() -> None:
    spec = make_spec()
    state = PlannerState()
    replicas: list[int] = []
    for minute, demand in enumerate([200, 50, 50, 50, 50, 50, 50, 50]):
        decision, state = plan(
            now=NOW + 60 * minute,
            spec=spec,
            latest_value=demand,
            forecast=flat_forecast([demand] * 9),
            calibration=NO_OFFSET,
            current_replicas=replicas[-1] if replicas else 20,
            state=state,
        )
        replicas.append(decision.replicas)
    # 20 is held for the 300 s window (minutes 1-4), then drops.
    assert replicas[:5] == [20, 20, 20, 20, 20]
    assert replicas[5] < 20
    held, _ = plan(
        now=NOW + 60,
        spec=spec,
        latest_value=50,
        forecast=flat_forecast([50] * 9),
        calibration=NO_OFFSET,
        current_replicas=20,
        state=PlannerState(recommendations=((NOW, 20),), last_decided_at=NOW),
    )
    assert "holding 20 within scale-down window until 22:18:20" in held.reason


DAMP_CASES = [
    # raw, current, elapsed s, percent/min, previous recs, expected
    (4, 20, 60, 50.0, (), 10),  # 50%/min: at most half removed in a minute
    (4, 20, 30, 50.0, (), 15),  # half a minute: a quarter
    (4, 20, 60, None, (), 4),  # no rate limit
    (4, 20, 60, 100.0, (), 4),
    (25, 20, 60, 50.0, (), 25),  # scale-up is never damped
    (4, 20, 60, None, ((NOW - 100, 12),), 12),  # held by the window
    (4, 20, 60, None, ((NOW - 400, 12),), 4),  # expired from the window
]


@pytest.mark.parametrize(("raw", "current", "elapsed", "percent", "previous", "expected"), DAMP_CASES)
def test_damping(
    *,
    raw: int,
    current: int,
    elapsed: float,
    percent: float | None,
    previous: tuple[tuple[float, int], ...],
    expected: int,
) -> None:
    state = PlannerState(recommendations=previous, last_decided_at=NOW - elapsed)
    replicas, _, new_state = damp(
        now=NOW, raw=raw, current_replicas=current, state=state, stabilization_seconds=300, percent_per_minute=percent
    )
    assert replicas == expected
    assert new_state.recommendations[-1] == (NOW, raw)
    assert all(at > NOW - 300 for at, _ in new_state.recommendations)


@pytest.mark.parametrize(
    ("step_seconds", "percent", "within_seconds"), [(10, 50.0, 180), (30, 20.0, 480), (60, 50.0, 180)]
)
def test_short_steps_add_up_to_the_rate_limit(step_seconds: float, percent: float, within_seconds: float) -> None:
    """Each step's share of a minute used to round back up to no change: 50 %/min at 10 s
    steps held 8 replicas for ever. Counted from the period's highest count, the steps
    add up, and the HPA (which follows the plan) reaches the demand's 3 replicas in time."""
    state, current, now = PlannerState(last_decided_at=NOW - step_seconds), 8, NOW
    reached_at = None
    while now <= NOW + within_seconds:
        replicas, _, state = damp(
            now=now, raw=3, current_replicas=current, state=state, stabilization_seconds=0, percent_per_minute=percent
        )
        assert replicas <= current  # never asks for more than runs
        assert replicas >= math.ceil(8 * (1 - percent / 100 * (now - NOW + step_seconds) / 60) - 1e-9)
        current = replicas
        if current == 3 and reached_at is None:
            reached_at = now
        now += step_seconds
    assert reached_at is not None, f"still {current} replicas after {within_seconds}s"


def test_a_scale_down_the_hpa_holds_back_does_not_jump_back_up() -> None:
    """The HPA's own window keeps 8 replicas running while the plan comes down: the plan
    must stay down once there, or the HPA's window, a maximum, never sees it low."""
    state, plans = PlannerState(last_decided_at=NOW - 10), []
    for step in range(30):
        replicas, _, state = damp(
            now=NOW + 10 * step, raw=4, current_replicas=8, state=state, stabilization_seconds=0, percent_per_minute=50
        )
        plans.append(replicas)
    assert plans == sorted(plans, reverse=True), plans
    assert plans[-1] == 4


FILL_CASES = [
    # path (9 steps), pods per node, max replicas, replicas, buffer
    ([50] * 9, "4", "100", 8, 0),  # 5 replicas need 2 nodes: fill them
    ([40] * 9, "4", "100", 4, 0),  # already whole
    ([50, 50, 50, 50, 50, 50, 50, 50, 70], "4", "100", 6, 2),  # 5 + 2 placeholders on 2 nodes
    ([50] * 9, "4", "6", 6, 0),  # never above maxReplicas
    ([50] * 9, "1", "100", 5, 0),
]


@pytest.mark.parametrize(("path", "pods_per_node", "maximum", "replicas", "buffer"), FILL_CASES)
def test_replicas_fill_the_nodes_the_plan_pays_for(
    *, path: list[float], pods_per_node: str, maximum: str, replicas: int, buffer: int
) -> None:
    decision, _ = decide(path, latest=path[0], spec_keys={"podsPerNode": pods_per_node, "maxReplicas": maximum})
    assert (decision.replicas, decision.buffer_replicas) == (replicas, buffer)
    if replicas > 5:
        assert f"{replicas} replicas fill the" in decision.reason
