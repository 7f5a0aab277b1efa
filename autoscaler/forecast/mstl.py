"""Multi-seasonal model: a robust MSTL seasonal profile, damped-trend ETS on the rest.

The ETS model (`ets.py`) takes one period and averages its profile, so one burst in
its window shifts a whole phase, and a series with a daily and a weekly cycle gets
only the stronger one. Here every detected calendar period (`detect_periods`, which
clips spikes) is decomposed by statsmodels' MSTL with the robust STL fit, and the
sum of the seasonal components over the longest period is the profile; the level,
trend and error band are then the ETS model's, on the series minus that profile.
Before the decomposition bursts are clipped as the period detector clips them (to a
running median +/- 3 robust deviations), and the profile is the per-phase median of
the seasonal component over the cycles decomposed: the robust STL fit alone, over
four cycles, still let a burst through into the cycle it fell in.

STL's loess smoothers cost O(points x window) per pass: on a week at a one-minute
step (10,080 points, a 1,440-step season) one robust fit took minutes. So MSTL runs
on a coarse copy: block medians (which a burst inside a block does not move) over
blocks chosen so the longest period spans at least `points_per_cycle` blocks, with
the smoothers evaluated every few points (STL's `*_jump`, R's defaults) and one
MSTL iteration; the coarse profile is interpolated back to the series' step.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from statsmodels.tsa.seasonal import MSTL

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.base import FitError
from autoscaler.forecast.ets import ETSForecaster
from autoscaler.forecast.seasonality import (
    MEDIAN_WINDOWS_PER_PERIOD,
    MIN_CYCLES,
    MIN_PERIOD_STEPS,
    clip_spikes,
    detect_periods,
)

ROBUST_OUTER_ITERATIONS = 3
JUMP_SHARE = 0.1  # evaluate each loess smoother every tenth of its window, as R's stl does


class MSTLForecaster(ETSForecaster):
    name = "mstl"

    def __init__(
        self,
        *,
        periods: tuple[int, ...] | None = None,
        points_per_cycle: int = 144,
        seasonal_smoothing: float = 0.05,
        profile_cycles: int = 4,
        min_cycles: float = MIN_CYCLES,
        max_fit_points: int = 1000,
        max_recursion_points: int = 5000,
        min_points: int = 10,
        max_anchor: int = 1024,
    ) -> None:
        # ETS' single `period` is not one of this model's parameters (get_params reads
        # this signature); it stays None, and `_seasonality` below never reads it.
        super().__init__(
            period=None,
            seasonal_smoothing=seasonal_smoothing,
            profile_cycles=profile_cycles,
            min_cycles=min_cycles,
            max_fit_points=max_fit_points,
            max_recursion_points=max_recursion_points,
            min_points=min_points,
            max_anchor=max_anchor,
        )
        self.periods = periods
        self.points_per_cycle = points_per_cycle

    def _seasonality(self, values: FloatArray, filled: FloatArray, step: float) -> tuple[int, FloatArray]:
        found = self._usable_periods(values, step)
        if not found:
            return 1, np.zeros(1)
        block = coarsening(found, points_per_cycle=self.points_per_cycle)
        usable = min(filled.size, self.profile_cycles * found[-1]) // block * block
        # MSTL decomposes only periods shorter than half the series it is given.
        periods = tuple(period for period in found if 2 * (period // block) < usable // block)
        if not periods:
            return 1, np.zeros(1)
        longest = periods[-1]
        start = filled.size - usable
        window = max(MIN_PERIOD_STEPS + 1, periods[0] // MEDIAN_WINDOWS_PER_PERIOD)
        clipped = clip_spikes(filled[start:], window=window)
        coarse = np.median(clipped.reshape(-1, block), axis=1)
        seasonal = robust_mstl_seasonal(coarse, tuple(period // block for period in periods))
        # The median over the cycles decomposed, per phase: STL's seasonal is least
        # settled at the ends, and the last cycle alone carries its edge effects.
        cycles = seasonal.size // (longest // block)
        typical_cycle = np.median(seasonal[-cycles * (longest // block) :].reshape(cycles, -1), axis=0)
        # Block k covers fine steps k*block .. k*block + block - 1 of a cycle.
        centres = np.arange(typical_cycle.size) * block + (block - 1) / 2.0
        fine = np.interp(np.arange(longest), centres, typical_cycle, period=longest)
        # Phase 0 is index 0 of `filled`; the last cycle starts at filled.size - longest.
        profile: FloatArray = fine[(np.arange(longest) - filled.size) % longest]
        return longest, profile - profile.mean()

    def _usable_periods(self, values: FloatArray, step: float) -> tuple[int, ...]:
        if self.periods is None:
            return detect_periods(values, step_seconds=step, min_cycles=self.min_cycles)
        return tuple(
            sorted(period for period in self.periods if period > 1 and values.size >= self.min_cycles * period)
        )


def coarsening(periods: tuple[int, ...], *, points_per_cycle: int) -> int:
    """The largest block dividing every period that leaves the longest `points_per_cycle` blocks."""
    common = math.gcd(*periods)
    most = max(1, periods[-1] // points_per_cycle)
    return max(block for block in range(1, min(common, most) + 1) if common % block == 0)


def robust_mstl_seasonal(series: FloatArray, periods: tuple[int, ...]) -> FloatArray:
    """Sum of MSTL's seasonal components (robust STL fits); FitError when it cannot fit."""
    shortest = periods[0]
    stl_settings: dict[str, int | bool | None] = {
        "robust": True,
        "outer_iter": ROBUST_OUTER_ITERATIONS,
        "seasonal_jump": max(1, math.ceil(JUMP_SHARE * 7)),
        "trend_jump": max(1, math.ceil(JUMP_SHARE * 1.5 * shortest)),
        "low_pass_jump": max(1, math.ceil(JUMP_SHARE * shortest)),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' chatter on short or flat series
            result = MSTL(series, periods=periods, iterate=1, stl_kwargs=stl_settings).fit()
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
        raise FitError(f"statsmodels MSTL failed: {error}") from error
    seasonal = np.asarray(result.seasonal, dtype=np.float64)
    combined: FloatArray = seasonal.sum(axis=1) if seasonal.ndim == 2 else seasonal
    if not np.isfinite(combined).all():
        raise FitError("statsmodels MSTL returned a non-finite seasonal component")
    return combined
