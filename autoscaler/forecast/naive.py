"""The last-value forecast: the final fallback, which fits anything with one finite value.

The band is the empirical distribution of h-step changes of the series itself, so a
bursty series gets a wide band and a flat one a narrow band. With fewer changes than
an anchor needs, a Gaussian band with the spread of the few values seen stands in.
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
from autoscaler.forecast.base import DEFAULT_LEVELS
from autoscaler.forecast.estimator import Estimator
from autoscaler.forecast.level import origin_scales
from autoscaler.forecast.prepare import check_request, check_step, clean_series, is_nonnegative

SHORT_HISTORY_RELATIVE_SPREAD = 0.1


def forward_filled(values: FloatArray) -> FloatArray:
    """Each NaN replaced by the last finite value before it (leading NaNs stay)."""
    finite = np.isfinite(values)
    last_index = np.where(finite, np.arange(values.size), -1)
    np.maximum.accumulate(last_index, out=last_index)
    out = np.full(values.size, np.nan)
    seen = last_index >= 0
    out[seen] = values[last_index[seen]]
    return out


def short_history_band(values: FloatArray, last: float, level: float) -> EmpiricalBand:
    """A Gaussian band from the spread of a handful of values, relative to `level`."""
    finite = values[np.isfinite(values)]
    sigma = float(finite.std()) if finite.size >= 2 else 0.0
    if sigma <= 0.0:
        sigma = SHORT_HISTORY_RELATIVE_SPREAD * abs(last)
    return EmpiricalBand.normal(sigma / level)


class NaiveForecaster(Estimator):
    name = "naive"

    def __init__(self, *, max_anchor: int = 1024, max_origins: int = 4000) -> None:
        self.max_anchor = max_anchor
        self.max_origins = max_origins

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        values = clean_series(y)
        step = check_step(step_seconds)
        filled = forward_filled(values)
        last = float(filled[-1])
        scales, level = origin_scales(values, step_seconds=step)

        def forecast_from(origins: IntArray, horizon: int) -> FloatArray:
            return filled[origins]

        errors = insample_errors(
            values,
            forecast_from,
            anchors=anchor_horizons(self.max_anchor),
            first_origin=0,
            max_origins=self.max_origins,
            scales=scales,
        )
        band = EmpiricalBand.from_errors(errors)
        self.band_ = band if band is not None else short_history_band(values, last, level.current)
        self.level_ = level
        self.step_seconds_ = step
        self.last_ = last
        self.nonnegative_ = is_nonnegative(values)
        return self

    def update(self, value: float) -> None:
        self._require_fitted()
        self.level_.update(value)
        if math.isfinite(value):
            self.last_ = float(value)
            self.nonnegative_ = self.nonnegative_ and value >= 0.0

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        checked = check_request(horizon, levels)
        return assemble_forecast(
            np.full(horizon, self.last_),
            self.band_.offsets(horizon, checked) * self.level_.current,
            levels=checked,
            step_seconds=self.step_seconds_,
            model=self.name,
            nonnegative=self.nonnegative_,
            fallback_value=self.last_,
        )
