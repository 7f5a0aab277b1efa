"""Holt-Winters with an additive damped trend and an additive seasonal profile.

statsmodels estimates the smoothing parameters; we run the state recursion ourselves
so `update` is O(1) with those parameters and no refit.

Seasonality is a profile, not statsmodels' seasonal component, on purpose: estimating
m initial seasonal states by optimisation took 2-5 s already for m = 48 and does not
scale to a 1-minute step (m = 1440 for a day). Instead:

1. the profile is the mean, per phase of the strongest detected period, of the series
   minus its centred moving average over the last `profile_cycles` cycles (plus the
   half cycle at each end the average needs), smoothed over a few neighbouring phases
   and centred on zero;
2. statsmodels' `ExponentialSmoothing(trend="add", damped_trend=True)` is fitted to the
   last `max_fit_points` of the deseasonalised series (alpha, beta and phi);
3. the recursion then also adapts the profile: each observation moves its phase's
   seasonal state by `seasonal_smoothing` times the one-step error (the Holt-Winters
   seasonal equation with gamma fixed rather than estimated).

The recursion runs over the last `max_recursion_points` (more than the estimation
window, so the error band sees whole cycles), starting from the mean of its first
points with no trend; the first tenth of that window is burn-in and gives no errors.

Everything is computed on the series divided by its mean absolute value, so the
optimiser sees the same numbers for 0.01 and for 1e6.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Self

import numpy as np
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from autoscaler.domain.types import FloatArray, Forecast
from autoscaler.forecast.bands import (
    EmpiricalBand,
    IntArray,
    anchor_horizons,
    assemble_forecast,
    insample_errors,
)
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError
from autoscaler.forecast.estimator import Estimator
from autoscaler.forecast.level import origin_scales
from autoscaler.forecast.prepare import (
    bridge_gaps,
    check_request,
    check_step,
    clean_series,
    is_nonnegative,
    trim_leading_gaps,
)
from autoscaler.forecast.seasonality import MIN_CYCLES, detect_seasonality

PROFILE_SMOOTHING_PER_PERIOD = 96  # smooth over ~15 minutes of a daily cycle
INITIAL_LEVEL_POINTS = 50
BURN_IN_SHARE = 0.1


class HoltWintersState:
    """Level, damped trend and a seasonal profile, advanced one observation at a time."""

    __slots__ = ("alpha", "beta", "gamma", "level", "phase", "phi", "season", "trend")

    def __init__(
        self,
        *,
        alpha: float,
        beta: float,
        phi: float,
        gamma: float,
        level: float,
        trend: float,
        season: FloatArray,
        phase: int,
    ) -> None:
        self.alpha, self.beta, self.phi, self.gamma = alpha, beta, phi, gamma
        self.level, self.trend = level, trend
        self.season = season
        self.phase = phase

    def step(self, value: float) -> None:
        """Fold in one observation; NaN advances the clock with a zero error."""
        season = self.season
        phase = self.phase
        damped = self.phi * self.trend
        error = value - (self.level + damped + season[phase]) if math.isfinite(value) else 0.0
        self.level += damped + self.alpha * error
        self.trend = damped + self.alpha * self.beta * error
        season[phase] += self.gamma * error
        self.phase = (phase + 1) % season.size

    def path(self, horizon: int) -> FloatArray:
        steps = np.arange(1, horizon + 1)
        damping = damped_sum(self.phi, steps)
        phases = (self.phase + steps - 1) % self.season.size
        return self.level + damping * self.trend + self.season[phases]


def damped_sum(phi: float, steps: IntArray) -> FloatArray:
    """phi + phi^2 + ... + phi^h for each h in `steps`."""
    if math.isclose(phi, 1.0):
        return steps.astype(np.float64)
    return phi * (1.0 - phi ** steps.astype(np.float64)) / (1.0 - phi)


def seasonal_profile(filled: FloatArray, *, period: int, cycles: int) -> FloatArray:
    """Zero-mean profile per phase, phase 0 being index 0 of `filled` (see module doc).

    Only points where the centred moving average is defined count, so a trend at the
    edges of the window does not leak into the profile.
    """
    usable = min(filled.size, (cycles + 1) * period)
    start = filled.size - usable
    cumulative = np.concatenate(([0.0], np.cumsum(filled[start:])))
    valid = usable - period + 1
    moving = (cumulative[period:] - cumulative[:valid]) / period
    centres = start + period // 2 + np.arange(valid)
    phases = centres % period
    sums = np.bincount(phases, weights=filled[centres] - moving, minlength=period)
    counts = np.bincount(phases, minlength=period)
    deviations = np.divide(sums, counts, out=np.zeros(period), where=counts > 0)
    width = max(1, period // PROFILE_SMOOTHING_PER_PERIOD)
    if width > 1:
        padded = np.concatenate((deviations[-width:], deviations, deviations[:width]))
        kernel = np.ones(2 * width + 1) / (2 * width + 1)
        deviations = np.convolve(padded, kernel, mode="same")[width:-width]
    profile: FloatArray = deviations - deviations.mean()
    return profile


class ETSForecaster(Estimator):
    name = "ets"

    def __init__(
        self,
        *,
        period: int | None = None,
        seasonal_smoothing: float = 0.05,
        profile_cycles: int = 4,
        min_cycles: float = MIN_CYCLES,
        max_fit_points: int = 1000,
        max_recursion_points: int = 5000,
        min_points: int = 10,
        max_anchor: int = 1024,
    ) -> None:
        self.period = period
        self.seasonal_smoothing = seasonal_smoothing
        self.profile_cycles = profile_cycles
        self.min_cycles = min_cycles
        self.max_fit_points = max_fit_points
        self.max_recursion_points = max_recursion_points
        self.min_points = min_points
        self.max_anchor = max_anchor

    def _choose_period(self, values: FloatArray, step: float) -> int:
        if self.period is not None:
            return self.period if values.size >= self.min_cycles * self.period else 1
        found = detect_seasonality(values, step_seconds=step, min_cycles=self.min_cycles)
        return max(found, key=lambda period: period.strength).steps if found else 1

    def _seasonality(self, values: FloatArray, filled: FloatArray, step: float) -> tuple[int, FloatArray]:
        """(period, zero-mean profile with phase 0 at index 0 of `filled`); (1, [0]) for none."""
        period = self._choose_period(values, step)
        if period <= 1:
            return 1, np.zeros(1)
        return period, seasonal_profile(filled, period=period, cycles=self.profile_cycles)

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        values = trim_leading_gaps(clean_series(y))
        step = check_step(step_seconds)
        if np.isfinite(values).sum() < self.min_points:
            raise FitError(f"ETS needs {self.min_points} observed points, got {int(np.isfinite(values).sum())}")
        scale = float(np.mean(np.abs(values[np.isfinite(values)]))) or 1.0
        scaled = values / scale
        filled = bridge_gaps(scaled)
        period, profile = self._seasonality(values, filled, step)
        phases = np.arange(filled.size) % period
        deseasonalised = filled - profile[phases]
        params = _estimate_damped_trend(deseasonalised[-self.max_fit_points :])
        window_start = max(0, filled.size - self.max_recursion_points)
        state = HoltWintersState(
            alpha=params["smoothing_level"],
            beta=params["smoothing_trend"],
            phi=params["damping_trend"],
            gamma=self.seasonal_smoothing if period > 1 else 0.0,
            level=float(deseasonalised[window_start : window_start + INITIAL_LEVEL_POINTS].mean()),
            trend=0.0,
            season=profile.copy(),
            phase=int(phases[window_start]),
        )
        window = scaled[window_start:]
        levels, trends, seasons = (np.empty(window.size) for _ in range(3))
        for index, value in enumerate(window):
            phase = state.phase
            state.step(float(value))
            levels[index], trends[index], seasons[index] = state.level, state.trend, state.season[phase]

        def forecast_from(origins: IntArray, horizon: int) -> FloatArray:
            cycles_back = -(-horizon // period)
            season_index = origins + horizon - cycles_back * period
            season = np.where(
                season_index >= 0,
                seasons[np.maximum(season_index, 0)],
                profile[(window_start + origins + horizon) % period],
            )
            damping = damped_sum(state.phi, np.array([horizon]))[0]
            path: FloatArray = levels[origins] + damping * trends[origins] + season
            return path

        scales, level = origin_scales(window, step_seconds=step)
        errors = insample_errors(
            window,
            forecast_from,
            anchors=anchor_horizons(self.max_anchor),
            first_origin=int(BURN_IN_SHARE * window.size),
            max_origins=window.size,
            scales=scales,
        )
        band = EmpiricalBand.from_errors(errors)
        if band is None:
            raise FitError(f"too few points ({window.size}) to measure ETS errors")
        self.period_ = period
        self.scale_ = scale
        self.state_ = state
        self.band_ = band
        self.level_ = level
        self.step_seconds_ = step
        self.last_ = float(filled[-1] * scale)
        self.nonnegative_ = is_nonnegative(values)
        return self

    def update(self, value: float) -> None:
        self._require_fitted()
        self.level_.update(value / self.scale_)
        if math.isfinite(value):
            self.last_ = float(value)
            self.nonnegative_ = self.nonnegative_ and value >= 0.0
        self.state_.step(value / self.scale_)

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        checked = check_request(horizon, levels)
        return assemble_forecast(
            self.state_.path(horizon) * self.scale_,
            self.band_.offsets(horizon, checked) * (self.level_.current * self.scale_),
            levels=checked,
            step_seconds=self.step_seconds_,
            model=self.name,
            nonnegative=self.nonnegative_,
            fallback_value=self.last_,
        )


def _estimate_damped_trend(series: FloatArray) -> dict[str, float]:
    """statsmodels' damped-trend Holt fit; its warnings and failures become FitError."""
    names = ("smoothing_level", "smoothing_trend", "damping_trend")
    try:
        with warnings.catch_warnings():
            # Convergence and overflow warnings on flat or tiny series are expected here;
            # the parameters are checked for finiteness below instead.
            warnings.simplefilter("ignore")
            result = ExponentialSmoothing(series, trend="add", damped_trend=True).fit(use_brute=False)
        params = {name: float(result.params[name]) for name in names}
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
        raise FitError(f"statsmodels ExponentialSmoothing failed: {error}") from error
    if not all(math.isfinite(value) for value in params.values()):
        raise FitError(f"statsmodels returned non-finite parameters: {params}")
    return params
