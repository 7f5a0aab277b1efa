"""A tiny forecaster implementing the protocol, so planner tests do not depend on real models."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Self

import numpy as np
from scipy.stats import norm

from autoscaler.domain.spec import ScalerSpec, parse_spec
from autoscaler.domain.types import FloatArray, Forecast
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError, Forecaster


@functools.lru_cache(maxsize=8)
def _normal_quantiles(levels: tuple[float, ...]) -> FloatArray:
    result: FloatArray = norm.ppf(np.asarray(levels))
    return result


class RandomWalkForecaster:
    """Last value, Gaussian band from the spread of one-step changes, widening as sqrt(h)."""

    name = "random-walk"

    def __init__(self) -> None:
        self.fit_count = 0

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        finite = y[np.isfinite(y)]
        if finite.size < 2:
            raise FitError("needs two finite values")
        self.last_ = float(finite[-1])
        self.sigma_ = max(float(np.std(np.diff(finite))), 1e-6)
        self.step_seconds_ = step_seconds
        self.fit_count += 1
        self.updates_ = 0
        return self

    def update(self, value: float) -> None:
        self.updates_ += 1
        if math.isfinite(value):
            self.last_ = value

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        steps = np.sqrt(np.arange(1, horizon + 1))[:, None]
        values = self.last_ + self.sigma_ * steps * _normal_quantiles(tuple(levels))[None, :]
        return Forecast(step_seconds=self.step_seconds_, levels=tuple(levels), values=values, model=self.name)


def random_walk_factory(model: str, lead_steps: int) -> Forecaster:
    return RandomWalkForecaster()


def make_spec(**overrides: str) -> ScalerSpec:
    metadata = {
        "query": "sum(rate(requests_total[2m]))",
        "capacityPerReplica": "10",
        "step": "60s",
        "leadTime": "180s",
        "nodeLeadTime": "300s",
        "historyWindow": "1d",
        "maxBufferReplicas": "4",
        "maxReplicas": "100",
    }
    metadata.update(overrides)
    return parse_spec(metadata)


def flat_forecast(values_by_step: Sequence[float], *, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
    """A forecast whose every quantile equals the given path (no uncertainty)."""
    path = np.asarray(values_by_step, dtype=np.float64)
    return Forecast(
        step_seconds=60.0, levels=tuple(levels), values=np.repeat(path[:, None], len(levels), axis=1), model="fixed"
    )
