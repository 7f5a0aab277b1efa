"""The backtest summary's comparison lines and the coverage the plans achieved."""

from __future__ import annotations

import math

import pytest

from autoscaler.sim.backtest import PolicyRun, StepRecord, comparison, planned_coverage
from autoscaler.sim.cluster import ClusterTotals


def run_with(name: str, *, demand: float, unserved: float, node_steps: int) -> PolicyRun:
    totals = ClusterTotals(steps=100, demand=demand, unserved=unserved, node_steps=node_steps)
    return PolicyRun(name=name, totals=totals, records=())


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        (
            run_with("holt-winters", demand=1000.0, unserved=40.0, node_steps=200),
            "ours vs holt-winters: unserved 0.50x, node-steps 1.10x",
        ),
        (  # the oracle's shortfall is a rounding error: a ratio of 2000x would mislead
            run_with("oracle", demand=1000.0, unserved=0.01, node_steps=200),
            "ours vs oracle: unserved 2.000% vs 0.001% of demand (no ratio: oracle leaves under 0.1%), "
            "node-steps 1.10x",
        ),
        (
            run_with("oracle", demand=1000.0, unserved=0.0, node_steps=0),
            "ours vs oracle: unserved 2.000% vs 0.000% of demand (no ratio: oracle leaves under 0.1%), "
            "node-steps 220 vs 0",
        ),
    ],
)
def test_comparison_prints_figures_instead_of_a_ratio_against_a_near_zero_baseline(
    baseline: PolicyRun, expected: str
) -> None:
    ours = run_with("ours", demand=1000.0, unserved=20.0, node_steps=220)
    assert comparison(ours, baseline) == expected


def record(demand: float, replicas: int, *, predictive: bool = True) -> StepRecord:
    return StepRecord(
        timestamp=0.0,
        demand=demand,
        forecast=demand if predictive else math.nan,
        desired_replicas=replicas,
        buffer_replicas=0,
        ready_replicas=replicas,
        nodes=replicas,
        unserved=0.0,
        reason="",
    )


def test_planned_coverage_counts_steps_or_demand_at_the_lead_time() -> None:
    # Plans at rows 0-3 (capacity 10 a replica) are judged against rows 1-4.
    records = [record(5.0, 1), record(10.0, 1), record(30.0, 1), record(10.0, 1, predictive=False), record(40.0, 1)]
    # Row 3 made no forecast, so only the plans of rows 0-2 count: demand 10, 30, 10.
    by_steps = planned_coverage(records, lead_steps=1, capacity_per_replica=10.0, basis="steps")
    by_demand = planned_coverage(records, lead_steps=1, capacity_per_replica=10.0, basis="demand")
    assert by_steps == pytest.approx(2 / 3)
    assert by_demand == pytest.approx(30 / 50)
    assert planned_coverage(records[:1], lead_steps=1, capacity_per_replica=10.0, basis="demand") is None
