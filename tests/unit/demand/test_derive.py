"""Offered demand from one step of signals: a table of (signals, demand, bound)."""

from __future__ import annotations

import math

import pytest

from autoscaler.demand.derive import DemandUnits, derive_demand, missing_pods
from autoscaler.domain.signals import SignalKind, StepSignals

A, C, W, R, U, P = (
    SignalKind.ARRIVALS,
    SignalKind.COMPLETIONS,
    SignalKind.WAITING,
    SignalKind.RUNNING,
    SignalKind.UTILIZATION,
    SignalKind.PODS,
)
LOAD = DemandUnits(capacity_per_replica=10.0)
UTILISATION = DemandUnits(capacity_per_replica=0.75, target_utilization=0.75)
STEP = 60.0

CASES = [
    # name, previous values, values, units, ready, demand (NaN: unknown), lower bound
    ("arrivals as measured", None, {A: 42.0, C: 30.0, W: 100.0}, LOAD, 3, 42.0, False),
    ("negative arrivals floor at 0", None, {A: -1.0}, LOAD, 3, 0.0, False),
    ("completions alone", None, {C: 30.0}, LOAD, 5, 30.0, False),
    ("completions at capacity are a lower bound", None, {C: 29.0}, LOAD, 3, 29.0, True),
    ("completions + growth of the system", {C: 30.0, W: 0.0, R: 6.0}, {C: 30.0, W: 0.0, R: 12.0}, LOAD, 5, 30.1, False),
    ("a growing queue is a lower bound", {C: 30.0, W: 60.0}, {C: 30.0, W: 660.0}, LOAD, 3, 40.0, True),
    ("a draining queue lowers demand", {C: 30.0, W: 600.0}, {C: 30.0, W: 0.0}, LOAD, 5, 20.0, False),
    ("kinds must match to difference", {C: 30.0, W: 600.0}, {C: 30.0, W: 0.0, R: 5.0}, LOAD, 5, 30.0, False),
    ("utilisation x ready", None, {U: 0.6}, UTILISATION, 10, 6.0, False),
    ("saturated utilisation is a lower bound", None, {U: 1.0}, UTILISATION, 10, 10.0, True),
    ("utilisation without ready replicas", None, {U: 0.6}, UTILISATION, None, math.nan, False),
    ("waiting alone measures nothing", None, {W: 50.0}, LOAD, 3, math.nan, False),
    ("NaN is missing, not zero", None, {A: math.nan}, LOAD, 3, math.nan, False),
    ("a silent pod makes a sum a lower bound", None, {A: 42.0, P: 2.0}, LOAD, 3, 42.0, True),
    ("a silent pod leaves an average exact", None, {U: 0.6, P: 9.0}, UTILISATION, 10, 6.0, False),
]


@pytest.mark.parametrize(
    ("name", "previous", "values", "units", "ready", "demand", "lower_bound"), CASES, ids=[c[0] for c in CASES]
)
def test_derivation(
    *,
    name: str,
    previous: dict[SignalKind, float] | None,
    values: dict[SignalKind, float],
    units: DemandUnits,
    ready: int | None,
    demand: float,
    lower_bound: bool,
) -> None:
    before = None if previous is None else StepSignals(timestamp=0.0, values=previous)
    estimate = derive_demand(StepSignals(timestamp=STEP, values=values), before, units=units, ready=ready)
    if math.isnan(demand):
        assert math.isnan(estimate.value)
        assert "unknown" in estimate.describe()
    else:
        assert estimate.value == pytest.approx(demand)
    assert estimate.lower_bound is lower_bound
    if lower_bound:
        assert "at least" in estimate.describe()


def test_saturation_is_flagged_for_capped_completions_and_pinned_utilisation() -> None:
    capped = derive_demand(StepSignals(timestamp=0.0, values={C: 30.0}), None, units=LOAD, ready=3)
    pinned = derive_demand(StepSignals(timestamp=0.0, values={U: 0.97}), None, units=UTILISATION, ready=4)
    queued = derive_demand(StepSignals(timestamp=0.0, values={C: 10.0, W: 5.0}), None, units=LOAD, ready=3)
    assert (capped.saturated, pinned.saturated, queued.saturated) == (True, True, False)
    assert "completions at 100% of the 3 ready replicas' capacity" in capped.note
    assert queued.lower_bound


def test_utilisation_in_request_units_uses_the_capacity_at_target() -> None:
    units = DemandUnits(capacity_per_replica=4.0, target_utilization=0.8)
    estimate = derive_demand(StepSignals(timestamp=0.0, values={U: 0.4}), None, units=units, ready=10)
    assert estimate.value == pytest.approx(0.4 * 10 * 4.0 / 0.8)


def test_missing_pods_are_counted_and_named() -> None:
    step = StepSignals(timestamp=0.0, values={C: 10.0, P: 3.0})
    assert missing_pods(step, 5) == 2
    assert missing_pods(step, None) == 0
    estimate = derive_demand(step, None, units=LOAD, ready=5)
    assert estimate.missing_pods == 2
    assert "2 of 5 ready pods did not report" in estimate.note
