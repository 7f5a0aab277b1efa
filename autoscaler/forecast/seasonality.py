"""Seasonal period detection from the step size and the autocorrelation.

Candidates are the calendar cycles a serving load follows: the day, the week and,
when the step is small enough for it to span several steps, the hour. A candidate is
kept when the history holds `min_cycles` full cycles and the autocorrelation of the
detrended series at that lag is both strong and a peak: higher than at half the lag.
The peak test matters because any smooth series is strongly autocorrelated at short
lags; a real cycle is anti-correlated half a cycle away.

Spikes are clipped before the autocorrelation is measured. The autocorrelation is a
ratio of sums of squares, so a burst of three times the median on one step in twenty
(an unannounced surge, a flash crowd) outweighs a daily swing of a third of the level
and hides it. `clip_spikes` bounds each point to a running median plus or minus a few
robust deviations: the cycle, which moves the running median, survives; isolated
bursts, which do not, are cut to the edge of the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.prepare import bridge_gaps, check_step, trim_leading_gaps

CALENDAR_CYCLES: tuple[tuple[str, float], ...] = (("hour", 3600.0), ("day", 86400.0), ("week", 604800.0))
MIN_PERIOD_STEPS = 4
MIN_STRENGTH = 0.3
MIN_CYCLES = 2.0
_MAX_CYCLES_EXAMINED = 8
SPIKE_DEVIATIONS = 3.0
"""How many robust standard deviations (1.4826 x MAD) from the running median a point may lie."""
MEDIAN_WINDOWS_PER_PERIOD = 48
"""The running median spans 1/48 of the period (30 minutes of a day), at least 5 steps."""
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class SeasonalPeriod:
    label: str
    steps: int
    strength: float  # autocorrelation at the period lag


def candidate_periods(step_seconds: float) -> tuple[tuple[str, int], ...]:
    """(label, period in steps) for the calendar cycles this step can express."""
    step = check_step(step_seconds)
    out: list[tuple[str, int]] = []
    for label, seconds in CALENDAR_CYCLES:
        steps = round(seconds / step)
        if steps >= MIN_PERIOD_STEPS and math.isclose(steps * step, seconds, rel_tol=0.02):
            out.append((label, steps))
    return tuple(out)


def autocorrelation(values: FloatArray, lag: int) -> float:
    """Lag-`lag` autocorrelation over pairs where both points are finite; NaN if undefined."""
    if lag <= 0 or lag >= values.size:
        return math.nan
    head, tail = values[:-lag], values[lag:]
    both = np.isfinite(head) & np.isfinite(tail)
    if both.sum() < 3:
        return math.nan
    finite = values[np.isfinite(values)]
    centre = finite.mean()
    variance = float(((finite - centre) ** 2).mean())
    if variance <= 0.0:
        return math.nan
    return float(((head[both] - centre) * (tail[both] - centre)).mean() / variance)


def clip_spikes(values: FloatArray, *, window: int, deviations: float = SPIKE_DEVIATIONS) -> FloatArray:
    """Each point bounded to its running median +/- `deviations` robust deviations; NaN stays NaN.

    The running median is over `window` steps (odd, centred) of the gap-bridged series;
    the deviation is the median absolute distance from it over the whole series.
    """
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return values.copy()
    size = max(3, window | 1)
    centre = median_filter(bridge_gaps(values), size=size, mode="mirror")
    residual = values - centre
    spread = _MAD_TO_SIGMA * float(np.median(np.abs(residual[finite])))
    if spread <= 0.0:
        return values.copy()
    bound = deviations * spread
    clipped: FloatArray = centre + np.clip(residual, -bound, bound)
    return clipped


def _detrended(values: FloatArray) -> FloatArray:
    """Values minus their least-squares line; NaN stays NaN."""
    positions = np.arange(values.size, dtype=np.float64)
    filled = bridge_gaps(values)
    slope, intercept = np.polyfit(positions, filled, 1)
    detrended: FloatArray = values - (slope * positions + intercept)
    return detrended


def detect_seasonality(
    y: FloatArray,
    *,
    step_seconds: float,
    min_cycles: float = MIN_CYCLES,
    min_strength: float = MIN_STRENGTH,
) -> tuple[SeasonalPeriod, ...]:
    """The calendar cycles the series shows, shortest first."""
    values = np.asarray(y, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    if not np.isfinite(values).any():
        return ()
    values = trim_leading_gaps(values)
    found: list[SeasonalPeriod] = []
    for label, period in candidate_periods(step_seconds):
        if values.size < min_cycles * period:
            continue
        segment = values[-(_MAX_CYCLES_EXAMINED * period) :]
        if np.isfinite(segment).sum() < min_cycles * period * 0.5:
            continue
        window = max(MIN_PERIOD_STEPS + 1, period // MEDIAN_WINDOWS_PER_PERIOD)
        detrended = _detrended(clip_spikes(segment, window=window))
        strength = autocorrelation(detrended, period)
        half = autocorrelation(detrended, period // 2)
        if math.isfinite(strength) and strength >= min_strength and not strength <= half:
            found.append(SeasonalPeriod(label=label, steps=period, strength=strength))
    return tuple(found)


def detect_periods(
    y: FloatArray,
    *,
    step_seconds: float,
    min_cycles: float = MIN_CYCLES,
    min_strength: float = MIN_STRENGTH,
) -> tuple[int, ...]:
    """Periods in steps, shortest first (see `detect_seasonality`)."""
    return tuple(
        period.steps
        for period in detect_seasonality(y, step_seconds=step_seconds, min_cycles=min_cycles, min_strength=min_strength)
    )
