"""A chain of forecasters: the first that fits serves, the rest are its fallbacks.

gbm and ets fall back to seasonal naive, which falls back to naive, which fits any
series with one finite value. `selection_` names the model that serves and the
failures on the way, with their error text, in the selector's own record type.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np

from autoscaler.domain.types import FloatArray, Forecast, ModelScore, Selection
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError, Forecaster
from autoscaler.forecast.estimator import Estimator

# What a numerical library raises on data it cannot fit; anything else is a bug and
# is left to surface.
FIT_FAILURES: tuple[type[Exception], ...] = (FitError, ValueError, ArithmeticError, np.linalg.LinAlgError)


def describe_failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


class FallbackForecaster(Estimator):
    def __init__(self, chain: tuple[Forecaster, ...]) -> None:
        self.chain = chain
        self.name = chain[0].name if chain else "fallback"

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        if not self.chain:
            raise FitError("empty fallback chain")
        failures: list[ModelScore] = []
        for model in self.chain:
            try:
                model.fit(y, step_seconds=step_seconds)
            except FIT_FAILURES as error:
                failures.append(
                    ModelScore(
                        model=model.name,
                        mase=math.nan,
                        pinball=math.nan,
                        coverage=math.nan,
                        failed=describe_failure(error),
                    )
                )
                continue
            self.active_ = model
            self.selection_ = Selection(chosen=model.name, scores=tuple(failures))
            return self
        summary = "; ".join(f"{failure.model}: {failure.failed}" for failure in failures)
        raise FitError(f"every model in the chain failed: {summary}")

    def update(self, value: float) -> None:
        self._require_fitted()
        self.active_.update(value)

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        return self.active_.predict(horizon, levels)
