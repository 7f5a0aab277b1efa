"""One conformance suite for every forecaster (the scikit-learn and Forecaster contracts).

Each model runs bare (it may refuse a series with FitError, never anything else) and
as `make_forecaster` builds it for the daemon (behind its fallback chain, where it
must always produce a valid forecast).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
import pytest

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError, Forecaster, NotFittedError
from autoscaler.forecast.ets import ETSForecaster
from autoscaler.forecast.gbm import GBMForecaster
from autoscaler.forecast.mstl import MSTLForecaster
from autoscaler.forecast.naive import NaiveForecaster
from autoscaler.forecast.scoring import lead_scale, walk_forward
from autoscaler.forecast.seasonal_naive import SeasonalNaiveForecaster
from autoscaler.forecast.selector import AutoForecaster, make_forecaster
from tests.unit.forecast.conftest import assert_valid_forecast, load_trace


class Model(Forecaster, Protocol):
    """What every forecaster offers: the Forecaster protocol plus the estimator habits."""

    def get_params(self) -> dict[str, Any]: ...

    def learned_attributes(self) -> tuple[str, ...]: ...


LEAD = 3
BARE: dict[str, Callable[[], Model]] = {
    "naive": NaiveForecaster,
    "seasonal_naive": SeasonalNaiveForecaster,
    "ets": ETSForecaster,
    "mstl": MSTLForecaster,
    "gbm": lambda: GBMForecaster(max_horizon=8),
    "auto": lambda: AutoForecaster(lead_steps=LEAD),
}
NAMES = tuple(BARE)
STEP = 1800.0  # 30 minutes: a daily period is 48 steps, which keeps the synthetic series short
DAY = 48


def daily_series(days: float, *, level: float = 100.0, seed: int = 0) -> FloatArray:
    steps = int(days * DAY)
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(steps) / DAY
    return level * (1.0 + 0.5 * np.sin(phase)) + rng.normal(0, 0.05 * level, steps)


def _step_change() -> FloatArray:
    series = daily_series(3)
    series[-30:] += 400.0
    return series


def _nan_runs() -> FloatArray:
    series = daily_series(3)
    series[20:35] = np.nan
    series[80:83] = np.nan
    series[-7:-2] = np.nan
    return series


def _spike() -> FloatArray:
    series = np.full(200, 10.0)
    series[100] = 10_000.0
    return series


def _leading_nans() -> FloatArray:
    series = daily_series(2.5)
    series[:40] = np.nan
    return series


def _with_infinity() -> FloatArray:
    series = daily_series(2.5)
    series[30] = np.inf
    return series


ADVERSARIAL: dict[str, Callable[[], FloatArray]] = {
    "constant": lambda: np.full(200, 7.0),
    "all_zeros": lambda: np.zeros(200),
    "single_spike": _spike,
    "nan_runs": _nan_runs,
    "leading_nans": _leading_nans,
    "infinity": _with_infinity,
    "step_change": _step_change,
    "one_point": lambda: np.array([5.0]),
    "two_points": lambda: np.array([5.0, 6.0]),
    "five_points": lambda: np.array([5.0, 0.0, 6.0, np.nan, 4.0]),
    "huge_scale": lambda: daily_series(2.5, level=1e6),
    "tiny_scale": lambda: daily_series(2.5, level=0.01),
    "mostly_zero_bursts": lambda: np.where(np.arange(300) % 29 < 3, 50.0, 0.0),
    "negative_values": lambda: daily_series(2.5) - 150.0,
}


def _nonnegative(series: FloatArray) -> bool:
    finite = series[np.isfinite(series)]
    return bool((finite >= 0).all())


@pytest.fixture(scope="module")
def fitted() -> dict[str, Model]:
    """One model of each kind fitted on four synthetic days, for tests that only predict."""
    return {name: factory().fit(daily_series(4), step_seconds=STEP) for name, factory in BARE.items()}


@pytest.mark.parametrize("name", NAMES)
def test_init_only_stores_hyperparameters(name: str) -> None:
    model = BARE[name]()
    params = model.get_params()
    signature = inspect.signature(type(model).__init__)
    assert set(params) == {p for p in signature.parameters if p != "self"}
    assert model.learned_attributes() == ()
    clone = type(model)(**params)
    assert clone.get_params() == params
    assert isinstance(model, Forecaster)


@pytest.mark.parametrize("name", NAMES)
def test_use_before_fit_raises_not_fitted(name: str) -> None:
    model = BARE[name]()
    with pytest.raises(NotFittedError):
        model.predict(3)
    with pytest.raises(NotFittedError):
        model.update(1.0)


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_learns_underscore_state(name: str) -> None:
    model = BARE[name]()
    assert model.fit(daily_series(4), step_seconds=STEP) is model
    assert model.learned_attributes()
    assert all(attribute.endswith("_") for attribute in model.learned_attributes())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("levels", [DEFAULT_LEVELS, (0.5,), (0.1, 0.5, 0.9, 0.999)])
def test_forecast_shape_levels_and_order(fitted: dict[str, Model], name: str, levels: tuple[float, ...]) -> None:
    forecast = fitted[name].predict(20, levels)
    assert_valid_forecast(forecast, horizon=20, levels=levels, nonnegative=True)
    assert forecast.step_seconds == STEP
    assert forecast.model in NAMES


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("horizon", "levels"),
    [(0, DEFAULT_LEVELS), (3, ()), (3, (0.9, 0.5)), (3, (0.0, 0.5)), (3, (0.5, 1.0))],
)
def test_bad_predict_requests_raise_value_error(
    fitted: dict[str, Model], name: str, horizon: int, levels: tuple[float, ...]
) -> None:
    with pytest.raises(ValueError):
        fitted[name].predict(horizon, levels)


@pytest.mark.parametrize("name", NAMES)
def test_update_moves_the_forecast_with_the_data(name: str) -> None:
    series = daily_series(4)
    model = BARE[name]().fit(series, step_seconds=STEP)
    before = model.predict(1).median()[0]
    for _ in range(12):
        model.update(float(series[-1]) + 500.0)
    after = model.predict(1).median()[0]
    assert after > before + 5.0  # 1% of the jump: ETS with a small alpha moves slowly


@pytest.mark.parametrize("name", NAMES)
def test_update_with_gaps_keeps_forecasts_valid(name: str) -> None:
    model = BARE[name]().fit(daily_series(4), step_seconds=STEP)
    for value in (math.nan, math.nan, 120.0, math.nan, -0.0):
        model.update(value)
        assert_valid_forecast(model.predict(10), horizon=10, levels=DEFAULT_LEVELS, nonnegative=True)


def test_naive_update_equals_refit_on_the_longer_series() -> None:
    series = daily_series(2)
    updated = NaiveForecaster().fit(series[:-5], step_seconds=STEP)
    for value in series[-5:]:
        updated.update(float(value))
    refitted = NaiveForecaster().fit(series, step_seconds=STEP)
    assert updated.last_ == refitted.last_ == series[-1]
    # The bands differ only by the five newest errors.
    assert updated.predict(4).median() == pytest.approx(refitted.predict(4).median(), rel=0.02)


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
@pytest.mark.parametrize("name", NAMES)
def test_adversarial_series_bare_model_fits_or_refuses_cleanly(name: str, case: str) -> None:
    series = ADVERSARIAL[case]()
    try:
        model = BARE[name]().fit(series, step_seconds=STEP)
    except FitError:
        return
    forecast = model.predict(12)
    assert_valid_forecast(forecast, horizon=12, levels=DEFAULT_LEVELS, nonnegative=_nonnegative(series))


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
@pytest.mark.parametrize("name", NAMES)
def test_adversarial_series_daemon_forecaster_always_forecasts(name: str, case: str) -> None:
    series = ADVERSARIAL[case]()
    model = make_forecaster(name, lead_steps=LEAD).fit(series, step_seconds=STEP)
    forecast = model.predict(12)
    assert_valid_forecast(forecast, horizon=12, levels=DEFAULT_LEVELS, nonnegative=_nonnegative(series))
    model.update(math.nan)
    model.update(float(np.nanmax(series)))
    assert_valid_forecast(model.predict(12), horizon=12, levels=DEFAULT_LEVELS, nonnegative=_nonnegative(series))


@pytest.mark.parametrize("name", NAMES)
def test_constant_series_forecasts_the_constant(name: str) -> None:
    forecast = make_forecaster(name, lead_steps=LEAD).fit(np.full(200, 7.0), step_seconds=STEP).predict(5)
    assert forecast.median() == pytest.approx(np.full(5, 7.0), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_step_change_is_followed(name: str) -> None:
    series = _step_change()
    forecast = make_forecaster(name, lead_steps=LEAD).fit(series, step_seconds=STEP).predict(3)
    old_level, new_level = np.mean(series[-80:-40]), np.mean(series[-10:])
    median = forecast.median()[0]
    assert abs(median - new_level) < abs(median - old_level)


@pytest.mark.parametrize("name", NAMES)
def test_all_nan_series_is_a_fit_error(name: str) -> None:
    with pytest.raises(FitError):
        make_forecaster(name, lead_steps=LEAD).fit(np.full(50, np.nan), step_seconds=STEP)


# Real traces: the seasonal models must beat holding the last value over a quarter of
# a day, and 90% intervals must cover roughly 90% of held-out points.
class TraceCase(NamedTuple):
    trace: str
    start: int
    points: int
    held: int

    def split(self, traces: dict[str, tuple[FloatArray, float]]) -> tuple[FloatArray, FloatArray, float]:
        values, step = traces[self.trace]
        series = values[self.start : self.start + self.points]
        return series[: -self.held], series[-self.held :], step


# The NASA slice is 4-11 July 1995, so the held-out day is a weekday after a weekday.
TRACE_CASES = [
    TraceCase("nab_nyc_taxi", start=0, points=48 * 7 * 5, held=48 * 4),
    TraceCase("nasa_http_jul95", start=1440 * 3, points=1440 * 8, held=1440),
]


@pytest.fixture(scope="module")
def traces() -> dict[str, tuple[FloatArray, float]]:
    return {case.trace: load_trace(case.trace) for case in TRACE_CASES}


@pytest.mark.parametrize("case", TRACE_CASES, ids=lambda case: case.trace)
@pytest.mark.parametrize("name", ["seasonal_naive", "ets", "mstl"])
def test_seasonal_models_beat_naive_a_quarter_day_ahead(
    traces: dict[str, tuple[FloatArray, float]], case: TraceCase, name: str
) -> None:
    train, held_out, step = case.split(traces)
    lead = round(86400 / step / 4)
    scale = lead_scale(train, lead)
    every = max(1, held_out.size // 48)
    naive = walk_forward(NaiveForecaster().fit(train, step_seconds=step), held_out, lead=lead, every=every)
    seasonal = walk_forward(BARE[name]().fit(train, step_seconds=step), held_out, lead=lead, every=every)
    assert seasonal.score(name, scale).mase < 0.9 * naive.score("naive", scale).mase


@pytest.mark.parametrize("case", TRACE_CASES, ids=lambda case: case.trace)
@pytest.mark.parametrize("name", ["naive", "seasonal_naive", "ets", "mstl", "gbm"])
def test_ninety_percent_intervals_cover_most_held_out_points(
    traces: dict[str, tuple[FloatArray, float]], case: TraceCase, name: str
) -> None:
    train, held_out, step = case.split(traces)
    model = BARE[name]().fit(train, step_seconds=step)
    score = walk_forward(model, held_out, lead=LEAD, every=max(1, held_out.size // 200)).score(name, 1.0)
    assert 0.8 <= score.coverage <= 0.98, score
