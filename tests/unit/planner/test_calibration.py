from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.planner.calibration import (
    MIN_SCORES,
    CoverageCalibrator,
    FloatRing,
    Prediction,
    SlidingMax,
    SortedWindow,
)


def test_ring_keeps_the_last_values_and_their_mean() -> None:
    ring = FloatRing(3)
    assert ring.mean() is None
    for value in (1.0, 2.0, 3.0, 10.0):
        ring.push(value)
    assert len(ring) == 3
    assert ring.mean() == pytest.approx(5.0)


def test_sorted_window_quantiles_match_numpy_over_the_last_values() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=500)
    window = SortedWindow(100)
    for value in values:
        window.push(float(value))
    assert len(window) == 100
    for level in (0.0, 0.1, 0.5, 0.95, 0.99, 1.0, 1.2, -0.1):
        expected = np.quantile(values[-100:], min(1.0, max(0.0, level)))
        assert window.quantile(level) == pytest.approx(expected)


def run_biased(target: float, *, bias: float, steps: int = 4000, seed: int = 7) -> CoverageCalibrator:
    """Actuals ~ N(100, 10); the model's 'quantile' is always 100 + bias (badly calibrated)."""
    rng = np.random.default_rng(seed)
    calibrator = CoverageCalibrator(target_coverage=target, lead_steps=2)
    for step in range(steps):
        base = 100.0 + bias
        calibrated = base + calibrator.offset(10.0)
        calibrator.record(Prediction(step + 2, base=base, median=100.0, scale=10.0, planned=calibrated))
        calibrator.observe(step=step, actual=float(rng.normal(100.0, 10.0)), naive_error=10.0)
    return calibrator


@pytest.mark.parametrize(("target", "bias"), [(0.9, -15.0), (0.95, 0.0), (0.99, 30.0), (0.8, 5.0)])
def test_coverage_converges_to_the_target_whatever_the_bias(target: float, bias: float) -> None:
    calibrator = run_biased(target, bias=bias)
    coverage = calibrator.achieved_coverage
    assert coverage is not None
    assert coverage == pytest.approx(target, abs=0.02)


def test_offset_is_zero_until_enough_scores() -> None:
    calibrator = CoverageCalibrator(target_coverage=0.9, lead_steps=1)
    for step in range(MIN_SCORES - 1):
        calibrator.record(Prediction(step, base=0.0, median=0.0, scale=1.0, planned=0.0))
        calibrator.observe(step=step, actual=5.0, naive_error=1.0)
    assert calibrator.offset(1.0) == 0.0
    calibrator.record(Prediction(MIN_SCORES - 1, base=0.0, median=0.0, scale=1.0, planned=0.0))
    calibrator.observe(step=MIN_SCORES - 1, actual=5.0, naive_error=1.0)
    assert calibrator.offset(1.0) == pytest.approx(5.0)


def test_the_offset_never_exceeds_the_largest_shortfall_in_the_window() -> None:
    """A burst scored against a quiet hour's narrow spread is a huge score; times a busy
    hour's spread it asked for thousands of replicas. It is held to the burst itself."""
    calibrator = CoverageCalibrator(target_coverage=0.99, lead_steps=1)
    for step in range(100):
        burst = step % 50 == 49
        calibrator.record(Prediction(step, base=2.0, median=2.0, scale=0.01, planned=2.0))
        calibrator.observe(step=step, actual=40.0 if burst else 2.0, naive_error=1.0)
    assert calibrator.offset(0.01) == pytest.approx(38.0)  # the score quantile itself, 3,800 x 0.01
    assert calibrator.offset(100.0) == pytest.approx(38.0)  # not 3,800 x 100
    assert calibrator.offset(0.001) == pytest.approx(3.8)  # below the cap, the scale still applies


def test_only_the_prediction_for_this_step_is_scored() -> None:
    calibrator = CoverageCalibrator(target_coverage=0.9, lead_steps=3)
    calibrator.record(Prediction(5, base=10.0, median=10.0, scale=1.0, planned=10.0))
    calibrator.record(Prediction(5, base=99.0, median=99.0, scale=1.0, planned=99.0))  # repeat: ignored
    calibrator.record(Prediction(7, base=10.0, median=10.0, scale=1.0, planned=10.0))
    calibrator.observe(step=4, actual=50.0, naive_error=1.0)  # nothing was planned for step 4
    assert calibrator.scored_steps == 0
    calibrator.observe(step=5, actual=9.0, naive_error=1.0)
    assert (calibrator.scored_steps, calibrator.achieved_coverage) == (1, 1.0)
    calibrator.observe(step=7, actual=math.nan, naive_error=None)  # a gap is not scored
    assert calibrator.scored_steps == 1


def test_a_miss_raises_the_level_and_a_hit_lowers_it() -> None:
    calibrator = CoverageCalibrator(target_coverage=0.9, lead_steps=1, rate=0.1)
    calibrator.record(Prediction(1, base=1.0, median=1.0, scale=1.0, planned=1.0))
    calibrator.observe(step=1, actual=2.0, naive_error=1.0)
    assert calibrator.level == pytest.approx(0.9 + 0.1 * 0.9)
    calibrator.record(Prediction(2, base=5.0, median=5.0, scale=1.0, planned=5.0))
    calibrator.observe(step=2, actual=2.0, naive_error=1.0)
    assert calibrator.level == pytest.approx(0.99 - 0.1 * 0.1)


@pytest.mark.parametrize(
    ("median_error", "naive_error", "expected"), [(0.0, 4.0, 0.0), (2.0, 4.0, 0.5), (3.0, 0.0, math.inf)]
)
def test_rolling_mase(median_error: float, naive_error: float, expected: float) -> None:
    calibrator = CoverageCalibrator(target_coverage=0.9, lead_steps=1)
    assert calibrator.mase is None
    for step in range(20):
        calibrator.record(Prediction(step, base=100.0, median=100.0 - median_error, scale=1.0, planned=100.0))
        calibrator.observe(step=step, actual=100.0, naive_error=naive_error)
    assert calibrator.mase == pytest.approx(expected)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 12),
    values=st.lists(st.sampled_from([-2.0, -0.5, 0.0, 0.0, 1.0, 3.5, 1e9, -1e9]) | st.floats(-10, 10), max_size=80),
)
def test_sorted_window_holds_exactly_the_last_values_with_ties(size: int, values: list[float]) -> None:
    window = SortedWindow(size)
    for count, value in enumerate(values, start=1):
        window.push(value)
        last = values[max(0, count - size) : count]
        assert len(window) == len(last)
        for level in (0.0, 0.3, 0.5, 1.0):
            assert window.quantile(level) == pytest.approx(float(np.quantile(last, level)), rel=1e-12, abs=1e-12)


def spiky_demand(steps: int, *, seed: int) -> np.ndarray:
    """A level of 100 with 10 % noise, and on 5 % of steps a burst of 3-6x the level."""
    rng = np.random.default_rng(seed)
    demand = rng.normal(100.0, 10.0, steps)
    bursts = rng.random(steps) < 0.05
    demand[bursts] *= rng.uniform(3.0, 6.0, int(bursts.sum()))
    return np.maximum(demand, 0.0)


def run_spiky(target: float, *, basis: str, steps: int = 20_000) -> tuple[CoverageCalibrator, float, float]:
    """A model whose quantile is always 100 (it never sees the bursts coming).

    Returns the calibrator and, over the second half of the run, the share of demand
    and the share of steps the calibrated plans covered.
    """
    demand = spiky_demand(steps, seed=11)
    calibrator = CoverageCalibrator(target_coverage=target, lead_steps=2, basis=basis)
    served = covered_steps = 0.0
    for step, actual in enumerate(demand):
        planned = 100.0 + calibrator.offset(10.0)
        calibrator.record(Prediction(step + 2, base=100.0, median=100.0, scale=10.0, planned=planned))
        calibrator.observe(step=step, actual=float(actual), naive_error=10.0)
        if step >= steps // 2 and step + 2 < steps:
            later = float(demand[step + 2])
            served += min(later, planned)
            covered_steps += later <= planned
    second_half = demand[steps // 2 + 2 :]
    return calibrator, served / float(second_half.sum()), covered_steps / second_half.size


@pytest.mark.parametrize("target", [0.9, 0.95, 0.99])
def test_demand_basis_converges_to_the_served_share_on_a_spiky_series(target: float) -> None:
    calibrator, demand_share, _ = run_spiky(target, basis="demand")
    assert demand_share == pytest.approx(target, abs=0.01)
    assert calibrator.achieved_coverage == pytest.approx(target, abs=0.015)


def test_steps_basis_covers_steps_but_loses_more_demand_on_the_same_series() -> None:
    _, demand_share, step_share = run_spiky(0.95, basis="steps")
    assert step_share == pytest.approx(0.95, abs=0.01)
    assert demand_share < 0.93  # the 5 % of steps it gives up carry the bursts (0.911 here)


def test_demand_basis_moves_the_level_by_the_shortfall_against_the_window_mean() -> None:
    calibrator = CoverageCalibrator(target_coverage=0.9, lead_steps=1, rate=0.1, basis="demand")
    calibrator.record(Prediction(1, base=10.0, median=10.0, scale=1.0, planned=10.0))
    calibrator.observe(step=1, actual=20.0, naive_error=1.0)  # short by 10 of 20; mean actual 20
    assert calibrator.level == pytest.approx(0.9 + 0.1 * (10.0 - 0.1 * 20.0) / 20.0)
    calibrator.record(Prediction(2, base=10.0, median=10.0, scale=1.0, planned=10.0))
    calibrator.observe(step=2, actual=0.0, naive_error=1.0)  # no demand: nothing allowed, no move
    assert calibrator.level == pytest.approx(0.9 + 0.1 * (10.0 - 0.1 * 20.0) / 20.0)
    assert calibrator.achieved_coverage == pytest.approx(10.0 / 20.0)


def test_an_unknown_basis_is_refused() -> None:
    with pytest.raises(ValueError, match="coverage basis 'requests'"):
        CoverageCalibrator(target_coverage=0.9, lead_steps=1, basis="requests")


def test_the_sliding_max_forgets_values_older_than_its_window() -> None:
    window = SlidingMax(3)
    assert window.max() is None
    for value, largest in [(5.0, 5.0), (1.0, 5.0), (2.0, 5.0), (0.0, 2.0), (-1.0, 2.0), (-3.0, 0.0), (4.0, 4.0)]:
        window.push(value)
        assert window.max() == largest
