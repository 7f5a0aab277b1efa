from __future__ import annotations

import numpy as np
import pytest

from autoscaler.domain.types import Forecast


@pytest.mark.parametrize("level", [0.01, 0.05, 0.07, 0.5, 0.95, 0.97, 0.99, 0.999])
def test_quantile_interpolates_between_levels_and_clamps_outside(level: float) -> None:
    rng = np.random.default_rng(5)
    levels = (0.05, 0.1, 0.5, 0.9, 0.95, 0.99)
    values = np.sort(rng.normal(100, 20, size=(7, len(levels))), axis=1)
    forecast = Forecast(step_seconds=60.0, levels=levels, values=values, model="m")
    expected = [np.interp(level, levels, row) for row in values]
    np.testing.assert_allclose(forecast.quantile(level), expected)
    assert forecast.horizon == 7
    np.testing.assert_allclose(forecast.median(), values[:, 2])
