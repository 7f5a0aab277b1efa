"""Empirical forecast bands and the assembly of a valid `Forecast`.

A model gives a point path; its uncertainty comes from its own in-sample errors at a
few anchor horizons (1, 2, 4, ...), summarised on a fixed grid of quantile levels so a
series keeps about a hundred numbers per anchor instead of its raw errors. Between
anchors the quantiles are interpolated in log-horizon; past the last anchor they grow
like sqrt(h), the random-walk rate, which is the cautious choice for a planner.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from autoscaler.domain.types import FloatArray, Forecast

IntArray = npt.NDArray[np.int64]
QUANTILE_GRID: FloatArray = np.concatenate(([0.001, 0.005], np.linspace(0.01, 0.99, 99), [0.995, 0.999]))
MIN_ERRORS_PER_ANCHOR = 8
_CACHE_ENTRIES = 8


def anchor_horizons(max_horizon: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to max_horizon (always at least (1,))."""
    anchors = [1]
    while anchors[-1] * 2 <= max_horizon:
        anchors.append(anchors[-1] * 2)
    return tuple(anchors)


class EmpiricalBand:
    """Error quantiles per anchor horizon; `offsets` is cached per request shape."""

    __slots__ = ("_cache", "anchors", "grid_quantiles")

    def __init__(self, anchors: Sequence[int], grid_quantiles: FloatArray) -> None:
        self.anchors: FloatArray = np.asarray(anchors, dtype=np.float64)
        self.grid_quantiles = grid_quantiles
        self._cache: dict[tuple[int, tuple[float, ...]], FloatArray] = {}

    @classmethod
    def from_errors(cls, errors_by_horizon: dict[int, FloatArray]) -> EmpiricalBand | None:
        """None when no anchor has enough finite errors to be trusted."""
        anchors: list[int] = []
        rows: list[FloatArray] = []
        for horizon in sorted(errors_by_horizon):
            errors = errors_by_horizon[horizon]
            errors = errors[np.isfinite(errors)]
            if errors.size < MIN_ERRORS_PER_ANCHOR:
                continue
            anchors.append(horizon)
            rows.append(np.quantile(errors, QUANTILE_GRID))
        if not anchors:
            return None
        return cls(anchors, np.vstack(rows))

    @classmethod
    def normal(cls, sigma: float) -> EmpiricalBand:
        """A Gaussian one-step band for series too short to have an error history."""
        return cls((1,), (sigma * ndtri(QUANTILE_GRID))[np.newaxis, :])

    def offsets(self, horizon: int, levels: tuple[float, ...]) -> FloatArray:
        """(horizon, len(levels)) error quantiles, in the units the errors were given."""
        key = (horizon, levels)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        per_anchor = np.array([np.interp(levels, QUANTILE_GRID, row) for row in self.grid_quantiles])
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        log_anchors = np.log(self.anchors)
        out = np.empty((horizon, len(levels)))
        for column in range(len(levels)):
            out[:, column] = np.interp(np.log(steps), log_anchors, per_anchor[:, column])
        beyond = steps > self.anchors[-1]
        out[beyond] = per_anchor[-1] * np.sqrt(steps[beyond] / self.anchors[-1])[:, np.newaxis]
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[key] = out
        return out


def insample_errors(
    y: FloatArray,
    forecast_from: Callable[[IntArray, int], FloatArray],
    *,
    anchors: Sequence[int],
    first_origin: int,
    max_origins: int,
    scales: FloatArray,
) -> dict[int, FloatArray]:
    """Relative errors (y[t + h] - forecast made at t) / level at t, most recent origins.

    `forecast_from(origins, h)` is the model's vectorised in-sample forecast; NaN
    where it is undefined (warm-up, gaps) or the actual is missing drops the pair.
    `scales` is the series' level after each point (see `level.py`).
    """
    errors: dict[int, FloatArray] = {}
    for horizon in anchors:
        last_origin = y.size - 1 - horizon
        if last_origin < first_origin:
            continue
        origins = np.arange(max(first_origin, last_origin - max_origins + 1), last_origin + 1)
        errors[horizon] = (y[origins + horizon] - forecast_from(origins, horizon)) / scales[origins]
    return errors


def assemble_forecast(
    point: FloatArray,
    offsets: FloatArray,
    *,
    levels: tuple[float, ...],
    step_seconds: float,
    model: str,
    nonnegative: bool,
    fallback_value: float,
) -> Forecast:
    """Point path plus error quantiles, made finite, non-crossing and clipped when needed."""
    values = point[:, np.newaxis] + offsets
    values = np.where(np.isfinite(values), values, fallback_value)
    values.sort(axis=1)
    if nonnegative:
        np.maximum(values, 0.0, out=values)
    return Forecast(step_seconds=step_seconds, levels=levels, values=values, model=model)


@functools.lru_cache(maxsize=32)
def _level_weights(fitted_levels: tuple[float, ...], levels: tuple[float, ...]) -> tuple[IntArray, FloatArray]:
    """(lower column, weight toward the next one) per wanted level, in normal score."""
    fitted_scores = ndtri(np.asarray(fitted_levels))
    wanted_scores = ndtri(np.asarray(levels))
    upper = np.clip(np.searchsorted(fitted_scores, wanted_scores), 1, fitted_scores.size - 1).astype(np.int64)
    lower = upper - 1
    weights: FloatArray = (wanted_scores - fitted_scores[lower]) / (fitted_scores[upper] - fitted_scores[lower])
    return lower, weights


def interpolate_levels(values: FloatArray, fitted_levels: Sequence[float], levels: tuple[float, ...]) -> FloatArray:
    """Quantiles at `levels` from quantiles at `fitted_levels` (columns), per row.

    Linear in the normal score between fitted levels and linear extrapolation in it
    beyond the outer ones, so a 0.99 request from a 0.05/0.5/0.95 fit widens the way
    a Gaussian tail would instead of clamping at the 0.95 value.
    """
    lower, weights = _level_weights(tuple(fitted_levels), levels)
    ordered = np.sort(values, axis=1)
    below = ordered[:, lower]
    out: FloatArray = below + weights * (ordered[:, lower + 1] - below)
    return out
