"""Model-specific properties behind the shared conformance suite."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from autoscaler.forecast.bands import EmpiricalBand, anchor_horizons, interpolate_levels
from autoscaler.forecast.ets import ETSForecaster, HoltWintersState, seasonal_profile
from autoscaler.forecast.gbm import GBMForecaster, _PackedTrees
from autoscaler.forecast.level import LevelTracker, ewma_levels, level_span
from autoscaler.forecast.mstl import MSTLForecaster
from autoscaler.forecast.naive import forward_filled
from autoscaler.forecast.seasonal_naive import SeasonalNaiveForecaster
from autoscaler.forecast.window import RecentWindow


def test_holt_recursion_reproduces_statsmodels() -> None:
    series = 10 + np.cumsum(np.random.default_rng(0).normal(0, 1, 300))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ExponentialSmoothing(series, trend="add", damped_trend=True).fit(use_brute=False)
    params = result.params
    state = HoltWintersState(
        alpha=params["smoothing_level"],
        beta=params["smoothing_trend"],
        phi=params["damping_trend"],
        gamma=0.0,
        level=params["initial_level"],
        trend=params["initial_trend"],
        season=np.zeros(1),
        phase=0,
    )
    fitted = []
    for value in series:
        fitted.append(state.path(1)[0])
        state.step(float(value))
    np.testing.assert_allclose(fitted, result.fittedvalues, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.path(5), result.forecast(5), rtol=1e-10)


def test_seasonal_profile_recovers_a_pure_cycle() -> None:
    cycle = np.sin(2 * np.pi * np.arange(24) / 24)
    series = 50 + np.tile(cycle, 6) + np.linspace(0, 3, 144)
    np.testing.assert_allclose(seasonal_profile(series, period=24, cycles=4), cycle, atol=0.05)


def test_ets_update_matches_fitting_the_longer_series_in_level() -> None:
    series = 100 + 10 * np.sin(2 * np.pi * np.arange(480) / 48)
    updated = ETSForecaster().fit(series[:-10], step_seconds=1800)
    for value in series[-10:]:
        updated.update(float(value))
    refitted = ETSForecaster().fit(series, step_seconds=1800)
    np.testing.assert_allclose(updated.predict(6).median(), refitted.predict(6).median(), rtol=0.02)


def test_packed_trees_equal_sklearn_predictions_for_every_model() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.random((800, 6))
    target = matrix[:, 0] * 3 + rng.normal(0, 0.2, 800)
    models = [
        GradientBoostingRegressor(loss="quantile", alpha=0.1, n_estimators=12, max_depth=2).fit(matrix, target),
        GradientBoostingRegressor(loss="quantile", alpha=0.9, n_estimators=20, max_depth=3).fit(matrix, target),
        GradientBoostingRegressor(loss="quantile", alpha=0.5, n_estimators=5, max_depth=4, learning_rate=0.3).fit(
            matrix, target
        ),
    ]
    fresh = rng.random((300, 6))
    expected = np.column_stack([model.predict(fresh) for model in models])
    np.testing.assert_allclose(_PackedTrees(models, matrix).predict(fresh), expected, atol=1e-12)


def test_gbm_is_scale_free() -> None:
    series = 5 + np.sin(2 * np.pi * np.arange(600) / 48) + np.random.default_rng(2).normal(0, 0.1, 600)
    small = GBMForecaster(max_horizon=8).fit(series, step_seconds=1800).predict(8)
    large = GBMForecaster(max_horizon=8).fit(series * 1e6, step_seconds=1800).predict(8)
    np.testing.assert_allclose(large.values, small.values * 1e6, rtol=1e-6)


def test_seasonal_naive_repeats_a_pure_cycle_and_carries_a_level_shift() -> None:
    cycle = np.array([0.0, 5.0, 10.0, 5.0] * 6)  # period 4 (given), 24 points
    model = SeasonalNaiveForecaster(periods=(4,), level_window=4).fit(cycle, step_seconds=60)
    np.testing.assert_allclose(model.predict(8).median(), [0, 5, 10, 5, 0, 5, 10, 5], atol=1e-9)
    for value in (100.0, 105.0, 110.0, 105.0):
        model.update(value)  # the whole cycle moved up by 100
    np.testing.assert_allclose(model.predict(4).median(), [200, 205, 210, 205], atol=1e-9)


def test_band_interpolates_between_anchors_and_grows_like_sqrt_beyond() -> None:
    errors = {1: np.linspace(-1, 1, 101), 4: np.linspace(-2, 2, 101)}
    band = EmpiricalBand.from_errors(errors)
    assert band is not None
    offsets = band.offsets(16, (0.5, 0.95))
    assert offsets[0, 1] == pytest.approx(0.9)
    assert offsets[3, 1] == pytest.approx(1.8)
    assert offsets[1, 1] == pytest.approx(1.35)  # halfway in log-horizon between 1 and 4
    assert offsets[15, 1] == pytest.approx(1.8 * 2)  # sqrt(16 / 4)
    assert EmpiricalBand.from_errors({1: np.array([1.0, np.nan])}) is None


def test_interpolate_levels_is_exact_at_fitted_levels_and_widens_outside() -> None:
    fitted = np.array([[1.0, 2.0, 4.0]])
    out = interpolate_levels(fitted, (0.05, 0.5, 0.95), (0.05, 0.5, 0.95, 0.99))
    np.testing.assert_allclose(out[0, :3], [1.0, 2.0, 4.0])
    assert out[0, 3] > 4.0


@pytest.mark.parametrize(("maximum", "expected"), [(1, (1,)), (5, (1, 2, 4)), (16, (1, 2, 4, 8, 16))])
def test_anchor_horizons(maximum: int, expected: tuple[int, ...]) -> None:
    assert anchor_horizons(maximum) == expected


def test_level_tracker_matches_the_vectorised_level() -> None:
    series = np.array([3.0, np.nan, 5.0, 0.0, 10.0, -4.0])
    span = level_span(60.0)
    levels = ewma_levels(series, span=span)
    tracker = LevelTracker(span=span, floor=0.0, initial=float(levels[1]))
    for value in series[2:]:
        tracker.update(float(value))
    assert tracker.current == pytest.approx(levels[-1])


def test_recent_window_keeps_the_newest_values_in_order() -> None:
    window = RecentWindow(np.array([1.0, 2.0]), 3)
    np.testing.assert_array_equal(window.ordered(), [np.nan, 1.0, 2.0])
    for value in (3.0, 4.0):
        window.append(value)
    np.testing.assert_array_equal(window.ordered(), [2.0, 3.0, 4.0])


def test_forward_fill_holds_the_last_value_through_gaps() -> None:
    filled = forward_filled(np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan]))
    np.testing.assert_array_equal(filled, [np.nan, 1.0, 1.0, 1.0, 4.0, 4.0])


@pytest.mark.parametrize("quantiles", [(0.5,), (0.9, 0.1), (0.0, 0.5)])
def test_gbm_rejects_unusable_quantiles(quantiles: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match=r"quantiles|levels"):
        GBMForecaster(quantiles=quantiles).fit(np.ones(300), step_seconds=60)


@pytest.mark.parametrize("seed", [0, 5, 7])
def test_mstl_profile_keeps_bursts_out_where_the_ets_profile_takes_them_in(seed: int) -> None:
    """A daily swing of +/-30 with 5 % of steps at 3x the median: the profile is the swing."""
    rng = np.random.default_rng(seed)
    day, steps = 48, 48 * 8
    swing = 30 * np.sin(2 * np.pi * np.arange(steps) / day)
    series = 100 + swing + rng.normal(0, 3, steps)
    series[rng.random(steps) < 0.05] = 3 * np.median(series)
    period, robust = MSTLForecaster()._seasonality(series, series, 1800.0)
    _, averaged = ETSForecaster()._seasonality(series, series, 1800.0)
    assert period == day
    assert np.abs(robust - swing[:day]).max() < 12.0
    assert np.abs(averaged - swing[:day]).max() > 40.0


def test_mstl_combines_a_daily_and_a_weekly_cycle() -> None:
    """Three weeks at 30-minute steps: weekend days run at half the weekday swing."""
    day, week = 48, 336
    steps = 3 * week
    phase = np.arange(steps)
    weekend = (phase % week) >= 5 * day
    series = 100 + np.where(weekend, 10.0, 30.0) * np.sin(2 * np.pi * phase / day) - 20.0 * weekend
    series += np.random.default_rng(1).normal(0, 2, steps)
    model = MSTLForecaster().fit(series, step_seconds=1800.0)
    assert model.period_ == week
    truth = series[-week:] - series[-week:].mean()
    profile = model.state_.season * model.scale_
    assert np.abs(profile - truth).mean() < 6.0


def test_gbm_fitted_on_zeros_forecasts_a_burst_without_overflowing() -> None:
    # The level floor of a window of zeros is tiny: once the burst has left the level
    # window but not the lags, the lags divided by it pass float32's range.
    forecaster = GBMForecaster(max_horizon=8).fit(np.zeros(300), step_seconds=60)
    for value in (50.0, *[0.0] * 12):
        forecaster.update(value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forecast = forecaster.predict(8)
    assert np.all(np.isfinite(forecast.values))
