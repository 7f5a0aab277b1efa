"""Shared helpers for the forecaster tests: real traces and forecast validity checks."""

from __future__ import annotations

import numpy as np

from autoscaler.domain.types import FloatArray, Forecast
from tests.traces import trace_path


def load_trace(name: str) -> tuple[FloatArray, float]:
    """(values, step_seconds) of the repository's trace `<name>.csv`."""
    table = np.loadtxt(trace_path(name), delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, 1].copy(), float(table[1, 0] - table[0, 0])


def assert_valid_forecast(forecast: Forecast, *, horizon: int, levels: tuple[float, ...], nonnegative: bool) -> None:
    assert forecast.values.shape == (horizon, len(levels))
    assert forecast.levels == levels
    assert np.isfinite(forecast.values).all(), forecast.values
    assert (np.diff(forecast.values, axis=1) >= 0).all(), "quantiles cross"
    if nonnegative:
        assert (forecast.values >= 0).all(), forecast.values
