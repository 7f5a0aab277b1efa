"""Forecast accuracy at one horizon: MASE, pinball loss, interval coverage, backtest.

Both MASE and pinball are scaled by the mean absolute `lead`-step change of the
training series, so 1.0 means "as good as holding the last value for the lead time"
and scores compare across series of any scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.types import FloatArray, Forecast, ModelScore
from autoscaler.forecast.base import DEFAULT_LEVELS, Forecaster

INTERVAL = (0.05, 0.95)


def lead_scale(train: FloatArray, lead: int) -> float:
    """Mean absolute lead-step change; falls back to the mean level, then to 1."""
    if train.size > lead:
        changes = np.abs(train[lead:] - train[:-lead])
        changes = changes[np.isfinite(changes)]
        if changes.size and changes.mean() > 0:
            return float(changes.mean())
    finite = np.abs(train[np.isfinite(train)])
    if finite.size and finite.mean() > 0:
        return float(finite.mean())
    return 1.0


def pinball(actual: FloatArray, quantiles: FloatArray, levels: tuple[float, ...]) -> float:
    """Mean pinball loss over points (rows) and levels (columns)."""
    diff = actual[:, np.newaxis] - quantiles
    tau = np.asarray(levels)[np.newaxis, :]
    return float(np.mean(np.maximum(tau * diff, (tau - 1.0) * diff)))


@dataclass(frozen=True, slots=True)
class LeadErrors:
    """Forecasts at the lead step, one row per backtest origin, with the actuals."""

    actual: FloatArray
    quantiles: FloatArray
    levels: tuple[float, ...]

    def score(self, model: str, scale: float, *, pinball_levels: tuple[float, ...] | None = None) -> ModelScore:
        """MASE of the median, interval coverage and the pinball loss, all at the lead step.

        `pinball_levels` (each one of `levels`) restricts the pinball loss to those
        quantiles, e.g. the upper tail a plan is sized from; None scores every level.
        """
        if self.actual.size == 0:
            return ModelScore(
                model=model,
                mase=math.nan,
                pinball=math.nan,
                coverage=math.nan,
                failed="no backtest origin had an observed actual",
            )
        levels = np.asarray(self.levels)
        median = np.array([np.interp(0.5, levels, row) for row in self.quantiles])
        low = np.array([np.interp(INTERVAL[0], levels, row) for row in self.quantiles])
        high = np.array([np.interp(INTERVAL[1], levels, row) for row in self.quantiles])
        covered = (self.actual >= low) & (self.actual <= high)
        scored = self.levels if pinball_levels is None else pinball_levels
        columns = [self.levels.index(level) for level in scored]
        return ModelScore(
            model=model,
            mase=float(np.mean(np.abs(self.actual - median))) / scale,
            pinball=pinball(self.actual, self.quantiles[:, columns], scored) / scale,
            coverage=float(covered.mean()),
        )


def walk_forward(
    model: Forecaster,
    held_out: FloatArray,
    *,
    lead: int,
    every: int = 1,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
) -> LeadErrors:
    """Feed `held_out` to a fitted model one step at a time, forecasting `lead` ahead.

    Origins are every `every` steps; an origin whose actual is missing is skipped.
    The model is never refitted, which is how the daemon runs between refits.
    """
    actuals: list[float] = []
    rows: list[FloatArray] = []
    for index, value in enumerate(held_out):
        target = index + lead - 1
        if index % every == 0 and target < held_out.size and math.isfinite(held_out[target]):
            forecast: Forecast = model.predict(lead, levels)
            actuals.append(float(held_out[target]))
            rows.append(forecast.values[lead - 1])
        model.update(float(value))
    quantiles = np.vstack(rows) if rows else np.empty((0, len(levels)))
    return LeadErrors(actual=np.asarray(actuals, dtype=np.float64), quantiles=quantiles, levels=levels)
