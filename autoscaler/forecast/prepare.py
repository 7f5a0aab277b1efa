"""Input checks and gap handling shared by the forecasters.

The models see NaN for steps without a sample. Estimators that need a continuous
series (statsmodels, the lag features' rolling statistics) get a filled copy: short
gaps are interpolated and long ones bridged linearly, for estimation only; the
error bands are computed on the real observations, never on filled values.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.base import FitError


def clean_series(y: FloatArray | Sequence[float]) -> FloatArray:
    """A 1-D float64 copy with infinities turned into gaps; FitError when nothing is finite."""
    values = np.array(y, dtype=np.float64).reshape(-1)
    values[~np.isfinite(values)] = np.nan
    if not np.isfinite(values).any():
        raise FitError(f"no finite value in {values.size} points")
    return values


def check_step(step_seconds: float) -> float:
    if not np.isfinite(step_seconds) or step_seconds <= 0:
        raise ValueError(f"step_seconds must be a positive number, got {step_seconds!r}")
    return float(step_seconds)


def bridge_gaps(values: FloatArray) -> FloatArray:
    """Every NaN replaced by linear interpolation between its finite neighbours.

    Leading and trailing gaps take the nearest finite value.
    """
    finite = np.isfinite(values)
    if finite.all():
        return values.copy()
    positions = np.arange(values.size)
    return np.interp(positions, positions[finite], values[finite])


def trim_leading_gaps(values: FloatArray) -> FloatArray:
    """The series from its first finite value on."""
    first = int(np.argmax(np.isfinite(values)))
    return values[first:]


def is_nonnegative(values: FloatArray) -> bool:
    finite = values[np.isfinite(values)]
    return bool(finite.size > 0 and finite.min() >= 0.0)


def check_request(horizon: int, levels: Sequence[float]) -> tuple[float, ...]:
    """Validate a predict request; levels must be strictly increasing in (0, 1)."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    return check_levels(levels)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Quantile levels as a tuple, or ValueError unless strictly increasing in (0, 1)."""
    return _checked_levels(tuple(float(level) for level in levels))


@functools.lru_cache(maxsize=64)
def _checked_levels(checked: tuple[float, ...]) -> tuple[float, ...]:
    # Cached: every predict validates the same few level sets, once per step.
    if not checked:
        raise ValueError("levels must not be empty")
    if any(not 0.0 < level < 1.0 for level in checked):
        raise ValueError(f"levels must lie in (0, 1), got {checked}")
    if any(later <= earlier for earlier, later in itertools.pairwise(checked)):
        raise ValueError(f"levels must be strictly increasing, got {checked}")
    return checked
