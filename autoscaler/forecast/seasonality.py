"""Seasonal period detection from the step size and the autocorrelation.

Candidates are the calendar cycles a serving load follows: the day, the week and,
when the step is small enough for it to span several steps, the hour. A candidate is
kept when the history holds `min_cycles` full cycles and the autocorrelation of the
detrended series at that lag is both strong and a peak: higher than at half the lag.
The peak test matters because any smooth series is strongly autocorrelated at short
lags; a real cycle is anti-correlated half a cycle away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.prepare import bridge_gaps, check_step, trim_leading_gaps

CALENDAR_CYCLES: tuple[tuple[str, float], ...] = (("hour", 3600.0), ("day", 86400.0), ("week", 604800.0))
MIN_PERIOD_STEPS = 4
MIN_STRENGTH = 0.3
MIN_CYCLES = 2.0
_MAX_CYCLES_EXAMINED = 8


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
        detrended = _detrended(segment)
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
        for period in detect_seasonality(
            y, step_seconds=step_seconds, min_cycles=min_cycles, min_strength=min_strength
        )
    )
