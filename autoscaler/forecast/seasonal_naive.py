"""Seasonal naive: the value one season ago, optionally moved by the recent level shift.

The level-adjusted form adds (mean of the last `w` steps) minus (mean of the same `w`
steps one season earlier) to the season-ago value, so a trend or a step change since
last season carries over while the shape of the cycle is kept. An additive shift,
not a ratio, because load series sit at zero for hours and a ratio of zeros is
meaningless.

Among the detected periods (day, week, ...) the one with the smallest in-sample error
is used. No qualifying period is a `FitError`: the fallback chain then uses naive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np

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
from autoscaler.forecast.seasonality import MIN_CYCLES, detect_periods
from autoscaler.forecast.window import RecentWindow

LEVEL_WINDOW_PER_PERIOD = 24  # one "hour" of a daily cycle
MIN_LEVEL_WINDOW = 3


class _SeasonalReference:
    """Seasonal-naive paths over a gap-free array, for any origins and horizons."""

    def __init__(self, filled: FloatArray, *, period: int, window: int, adjusted: bool) -> None:
        self.filled = filled
        self.cumulative = np.concatenate(([0.0], np.cumsum(filled)))
        self.period = period
        self.window = window
        self.adjusted = adjusted

    @property
    def first_origin(self) -> int:
        return self.period + self.window - 1

    def path(self, origins: IntArray, horizons: IntArray) -> FloatArray:
        """Forecast made at `origins` for `origins + horizons` (arrays broadcast)."""
        cycles_back = -(-horizons // self.period)
        reference: FloatArray = self.filled[origins + horizons - cycles_back * self.period]
        if not self.adjusted:
            return reference
        cumulative, window, period = self.cumulative, self.window, self.period
        recent = cumulative[origins + 1] - cumulative[origins + 1 - window]
        season_ago = cumulative[origins + 1 - period] - cumulative[origins + 1 - period - window]
        adjusted: FloatArray = reference + (recent - season_ago) / window
        return adjusted


class SeasonalNaiveForecaster(Estimator):
    name = "seasonal_naive"

    def __init__(
        self,
        *,
        periods: tuple[int, ...] | None = None,
        level_adjusted: bool = True,
        level_window: int | None = None,
        min_cycles: float = MIN_CYCLES,
        max_anchor: int = 1024,
        max_origins: int = 3000,
    ) -> None:
        self.periods = periods
        self.level_adjusted = level_adjusted
        self.level_window = level_window
        self.min_cycles = min_cycles
        self.max_anchor = max_anchor
        self.max_origins = max_origins

    def _window_for(self, period: int) -> int:
        if self.level_window is not None:
            return max(1, min(self.level_window, period))
        return min(period, max(MIN_LEVEL_WINDOW, period // LEVEL_WINDOW_PER_PERIOD))

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        values = trim_leading_gaps(clean_series(y))
        step = check_step(step_seconds)
        periods = (
            self.periods
            if self.periods is not None
            else detect_periods(values, step_seconds=step, min_cycles=self.min_cycles)
        )
        eligible = [period for period in periods if period >= 1 and values.size >= self.min_cycles * period]
        if not eligible:
            raise FitError(
                f"no seasonal period with {self.min_cycles:g} full cycles in {values.size} points "
                f"(periods considered: {list(periods)})"
            )
        filled = bridge_gaps(values)
        scales, level = origin_scales(values, step_seconds=step)
        best: tuple[float, _SeasonalReference, EmpiricalBand] | None = None
        for period in eligible:
            reference = _SeasonalReference(
                filled, period=period, window=self._window_for(period), adjusted=self.level_adjusted
            )

            def forecast_from(origins: IntArray, horizon: int, reference: _SeasonalReference = reference) -> FloatArray:
                return reference.path(origins, np.array([horizon], dtype=np.int64))

            errors = insample_errors(
                values,
                forecast_from,
                anchors=[h for h in anchor_horizons(self.max_anchor) if h <= period],
                first_origin=reference.first_origin,
                max_origins=self.max_origins,
                scales=scales,
            )
            band = EmpiricalBand.from_errors(errors)
            if band is None:
                continue
            score = float(np.mean([np.nanmean(np.abs(e)) for e in errors.values() if np.isfinite(e).any()]))
            if best is None or score < best[0]:
                best = (score, reference, band)
        if best is None:
            raise FitError(f"too few points ({values.size}) to measure seasonal errors at periods {eligible}")
        _, reference, band = best
        self.period_ = reference.period
        self.window_ = reference.window
        self.band_ = band
        self.level_ = level
        self.recent_ = RecentWindow(filled, reference.period + reference.window)
        self.step_seconds_ = step
        self.last_ = float(filled[-1])
        self.nonnegative_ = is_nonnegative(values)
        return self

    def _point_path(self, horizon: int) -> FloatArray:
        reference = _SeasonalReference(
            self.recent_.ordered(), period=self.period_, window=self.window_, adjusted=self.level_adjusted
        )
        origin = np.array([self.recent_.capacity - 1], dtype=np.int64)
        return reference.path(origin, np.arange(1, horizon + 1, dtype=np.int64))

    def update(self, value: float) -> None:
        self._require_fitted()
        self.level_.update(value)
        if math.isfinite(value):
            self.last_ = float(value)
            self.nonnegative_ = self.nonnegative_ and value >= 0.0
            self.recent_.append(float(value))
        else:
            # A missing step is imputed with our own forecast so the season stays aligned.
            self.recent_.append(float(self._point_path(1)[0]))

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        checked = check_request(horizon, levels)
        return assemble_forecast(
            self._point_path(horizon),
            self.band_.offsets(horizon, checked) * self.level_.current,
            levels=checked,
            step_seconds=self.step_seconds_,
            model=self.name,
            nonnegative=self.nonnegative_,
            fallback_value=self.last_,
        )
