from __future__ import annotations

import math

import pytest

from autoscaler.domain.signals import SignalKind
from autoscaler.planner.reactive import reactive_load, reactive_on_signals, reactive_utilisation
from tests.unit.planner.fakes import make_spec

LOAD_CASES = [
    # demand, capacity, current, min, max, expected, reason fragment
    (100.0, 10.0, 5, 1, 100, 10, "needs 10 replicas"),
    (105.0, 10.0, 10, 1, 100, 10, "within 10%"),  # ratio 1.05: no change
    (111.0, 10.0, 10, 1, 100, 12, "needs 12"),  # ratio 1.11: outside tolerance
    (89.0, 10.0, 10, 1, 100, 9, "needs 9"),
    (0.0, 10.0, 3, 1, 100, 1, "minReplicas 1"),
    (0.0, 10.0, 3, 0, 100, 0, "needs 0"),
    (5000.0, 10.0, 3, 1, 100, 100, "maxReplicas 100"),
    (100.0, 10.0, 0, 0, 100, 10, "needs 10"),  # from zero: no ratio to compare
    (math.nan, 10.0, 7, 1, 100, 7, "no current value"),
    (math.nan, 10.0, 0, 2, 100, 2, "keeping 2"),
]


@pytest.mark.parametrize(("demand", "capacity", "current", "low", "high", "expected", "fragment"), LOAD_CASES)
def test_reactive_load(
    *, demand: float, capacity: float, current: int, low: int, high: int, expected: int, fragment: str
) -> None:
    replicas, reason = reactive_load(
        demand=demand, capacity_per_replica=capacity, current_replicas=current, min_replicas=low, max_replicas=high
    )
    assert replicas == expected
    assert fragment in reason


UTILISATION_CASES = [
    # value, target, current, expected, fragment
    (0.9, 0.6, 4, 6, "needs 6"),
    (0.63, 0.6, 4, 4, "within 10%"),
    (0.3, 0.6, 4, 2, "needs 2"),
    (0.9, 0.6, 0, 2, "on 1 replicas"),  # no replicas yet: scale from one
    (math.nan, 0.6, 4, 4, "no current value"),
]


@pytest.mark.parametrize(("value", "target", "current", "expected", "fragment"), UTILISATION_CASES)
def test_reactive_utilisation(value: float, target: float, current: int, expected: int, fragment: str) -> None:
    replicas, reason = reactive_utilisation(
        value=value, target=target, current_replicas=current, min_replicas=1, max_replicas=50
    )
    assert replicas == expected
    assert fragment in reason


UTILISATION_KEYS = {
    "query": "avg(kv_cache_usage)",
    "metricKind": "utilisation",
    "capacityPerReplica": "",
    "targetUtilization": "0.5",
    "replicaSource": "kubernetes",
    "workloadName": "llm",
}
SERIES_CASES = [
    # name, spec keys, values, ready, current, expected replicas, fragment of the reason
    ("arrivals as AverageValue", {}, {SignalKind.ARRIVALS: 55.0}, 1, 1, 6, "arrivals: demand 55"),
    ("utilisation on ready pods", UTILISATION_KEYS, {SignalKind.UTILIZATION: 1.0}, 3, 5, 6, "on 3 replicas"),
    ("missing value keeps current", {}, {}, 4, 4, 4, "no current value"),
    (
        "the largest trigger wins",
        {"query": "", "completionsQuery": "c", "waitingQuery": "w", "drainTime": "100s"},
        {SignalKind.COMPLETIONS: 20.0, SignalKind.WAITING: 5000.0},
        2,
        2,
        5,
        "waiting: demand 5000 needs 5",
    ),
    (
        "running alone is not scaled on",
        {"query": "", "runningQuery": "r"},
        {SignalKind.RUNNING: 9.0},
        3,
        3,
        3,
        "no series",
    ),
]


@pytest.mark.parametrize(
    ("name", "keys", "values", "ready", "current", "expected", "fragment"),
    SERIES_CASES,
    ids=[case[0] for case in SERIES_CASES],
)
def test_keda_on_the_raw_series(
    *,
    name: str,
    keys: dict[str, str],
    values: dict[SignalKind, float],
    ready: int,
    current: int,
    expected: int,
    fragment: str,
) -> None:
    spec = make_spec(**keys)
    replicas, reason = reactive_on_signals(spec, values=values, ready=ready, current_replicas=current)
    assert replicas == expected
    assert fragment in reason
