"""Seasonal period detection: candidates from the step, confirmation by autocorrelation."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.seasonality import (
    MIN_STRENGTH,
    autocorrelation,
    candidate_periods,
    clip_spikes,
    detect_periods,
    detect_seasonality,
)
from tests.unit.forecast.conftest import load_trace


@pytest.mark.parametrize(
    ("step_seconds", "expected"),
    [
        (10.0, (("hour", 360), ("day", 8640), ("week", 60480))),
        (60.0, (("hour", 60), ("day", 1440), ("week", 10080))),
        (300.0, (("hour", 12), ("day", 288), ("week", 2016))),
        (1800.0, (("day", 48), ("week", 336))),  # an hour is 2 steps: too short to be a cycle
        (57.0, (("hour", 63), ("day", 1516), ("week", 10611))),  # rounded: within 2% of the cycle
    ],
)
def test_candidate_periods_follow_the_step(step_seconds: float, expected: tuple[tuple[str, int], ...]) -> None:
    assert candidate_periods(step_seconds) == expected


@pytest.mark.parametrize("step_seconds", [0.0, -60.0, float("nan")])
def test_candidate_periods_reject_a_bad_step(step_seconds: float) -> None:
    with pytest.raises(ValueError, match="step_seconds"):
        candidate_periods(step_seconds)


def _cycle(days: float, *, step_seconds: float, noise: float = 0.1, seed: int = 1) -> FloatArray:
    per_day = round(86400 / step_seconds)
    steps = int(days * per_day)
    rng = np.random.default_rng(seed)
    return 10 + np.sin(2 * np.pi * np.arange(steps) / per_day) + rng.normal(0, noise, steps)


@pytest.mark.parametrize("step_seconds", [60.0, 300.0, 1800.0])
def test_daily_cycle_is_found_with_two_cycles(step_seconds: float) -> None:
    assert detect_periods(_cycle(2.2, step_seconds=step_seconds), step_seconds=step_seconds) == (
        round(86400 / step_seconds),
    )


def test_less_than_two_cycles_finds_nothing() -> None:
    assert detect_periods(_cycle(1.8, step_seconds=300.0), step_seconds=300.0) == ()


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("white noise", np.random.default_rng(2).normal(10, 1, 2000)),
        ("constant", np.full(2000, 3.0)),
        ("trend", np.linspace(0, 100, 2000)),
        ("random walk", np.cumsum(np.random.default_rng(3).normal(0, 1, 2000))),
        ("all nan", np.full(2000, np.nan)),
        ("empty", np.empty(0)),
    ],
)
def test_no_cycle_is_invented(name: str, series: FloatArray) -> None:
    assert detect_periods(series, step_seconds=300.0) == (), name


def test_gaps_do_not_hide_the_cycle() -> None:
    series = _cycle(3, step_seconds=300.0)
    series[100:300] = np.nan
    series[600:610] = np.nan
    assert detect_periods(series, step_seconds=300.0) == (288,)


def test_smooth_hourly_wander_is_not_an_hourly_cycle() -> None:
    """A slow daily swing is autocorrelated at one hour, but an hour is not its cycle."""
    series = _cycle(3, step_seconds=60.0, noise=0.01)
    assert 60 not in detect_periods(series, step_seconds=60.0)


def test_autocorrelation_of_a_pure_cycle_is_one_at_its_period() -> None:
    series = np.sin(2 * np.pi * np.arange(400) / 40)
    assert autocorrelation(series, 40) == pytest.approx(1.0, abs=0.02)
    assert autocorrelation(series, 20) == pytest.approx(-1.0, abs=0.02)
    assert np.isnan(autocorrelation(series, 0))
    assert np.isnan(autocorrelation(series, 400))


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        ("nab_nyc_taxi", (48, 336)),  # daily and weekly
        ("nasa_http_jul95", (1440, 10080)),
        ("alibaba_lora_rate", (288, 2016)),
        ("nab_elb_request_count", ()),  # irregular spikes, README acf(day) 0.09
        ("azure_llm2023_conv_rate", ()),  # one hour of data at 10 s
    ],
)
def test_real_traces(trace: str, expected: tuple[int, ...]) -> None:
    values, step = load_trace(trace)
    found = detect_seasonality(values, step_seconds=step)
    assert tuple(period.steps for period in found) == expected
    assert all(0.3 <= period.strength <= 1.0 for period in found)


def _spiky_daily(*, step_seconds: float, seed: int, days: int = 7) -> tuple[FloatArray, FloatArray]:
    """A daily swing of +/-30 % with 5 % noise, and the same with 5 % of steps at 3x the median."""
    per_day = round(86400 / step_seconds)
    steps = days * per_day
    rng = np.random.default_rng(seed)
    clean = 100 * (1 + 0.3 * np.sin(2 * np.pi * np.arange(steps) / per_day)) + rng.normal(0, 5, steps)
    spiky = clean.copy()
    spiky[rng.random(steps) < 0.05] = 3 * np.median(clean)
    return clean, spiky


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("step_seconds", [60.0, 300.0, 600.0])
def test_daily_period_is_found_through_spikes_of_three_times_the_median(step_seconds: float, seed: int) -> None:
    _, spiky = _spiky_daily(step_seconds=step_seconds, seed=seed)
    per_day = round(86400 / step_seconds)
    assert detect_periods(spiky, step_seconds=step_seconds) == (per_day,)
    # Without the clipping the spikes swamp the cycle: the plain autocorrelation is too weak.
    raw = spiky - spiky.mean()
    assert autocorrelation(raw, per_day) < MIN_STRENGTH


def test_clip_spikes_cuts_bursts_and_keeps_the_cycle() -> None:
    clean, spiky = _spiky_daily(step_seconds=300.0, seed=4)
    spiky[10] = np.nan
    clipped = clip_spikes(spiky, window=7)
    assert np.isnan(clipped[10])
    assert np.nanmax(clipped) < 1.4 * clean.max()
    kept = np.isfinite(clipped) & (spiky == clean)
    assert np.median(np.abs(clipped[kept] - clean[kept])) < 1.0
