"""The recent level of a series, which scales the error bands.

Load errors grow with the load: a web service at its daily peak is noisier in
absolute terms than at night, and after a tenfold level shift last week's absolute
errors mean little. Bands are therefore learned relative to an exponentially weighted
mean of |value| at the forecast origin and applied to the current one. The level is
floored at a share of the series' mean absolute value so a quiet night does not make
the relative errors of the next burst explode.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.prepare import bridge_gaps

LEVEL_SECONDS = 3600.0
MIN_SPAN, MAX_SPAN = 3, 360
FLOOR_SHARE = 0.1


def level_span(step_seconds: float) -> int:
    """About an hour of steps, kept between 3 and 360."""
    return int(min(MAX_SPAN, max(MIN_SPAN, round(LEVEL_SECONDS / step_seconds))))


def level_floor(values: FloatArray) -> float:
    """A tenth of the mean absolute value (never zero, so it can divide)."""
    finite = np.abs(values[np.isfinite(values)])
    mean = float(finite.mean()) if finite.size else 0.0
    return max(FLOOR_SHARE * mean, np.finfo(np.float64).tiny)


def smoothing_weight(span: int) -> float:
    return 2.0 / (span + 1.0)


def ewma_levels(values: FloatArray, *, span: int) -> FloatArray:
    """The level after each point (gaps bridged), unfloored, as `LevelTracker` tracks it."""
    magnitudes = np.abs(bridge_gaps(values))
    weight = smoothing_weight(span)
    initial = [(1.0 - weight) * magnitudes[0]]
    smoothed, _ = lfilter([weight], [1.0, weight - 1.0], magnitudes, zi=initial)
    return np.asarray(smoothed, dtype=np.float64)


def origin_scales(values: FloatArray, *, step_seconds: float) -> tuple[FloatArray, LevelTracker]:
    """Floored levels after each point, and a tracker that has seen all of `values`."""
    span = level_span(step_seconds)
    floor = level_floor(values)
    raw = ewma_levels(values, span=span)
    return np.maximum(raw, floor), LevelTracker(span=span, floor=floor, initial=float(raw[-1]))


class LevelTracker:
    """O(1) update of the same exponentially weighted level."""

    __slots__ = ("floor", "raw", "weight")

    def __init__(self, *, span: int, floor: float, initial: float) -> None:
        self.weight = smoothing_weight(span)
        self.floor = floor
        self.raw = initial

    def update(self, value: float) -> None:
        if math.isfinite(value):
            self.raw += self.weight * (abs(value) - self.raw)

    @property
    def current(self) -> float:
        return max(self.raw, self.floor)
