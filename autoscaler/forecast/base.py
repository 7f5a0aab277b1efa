"""The Forecaster contract, in the scikit-learn style.

- `__init__` stores hyperparameters only; no learning, no validation side effects.
- `fit(y, *, step_seconds)` learns from a regular series (NaN allowed for gaps) and
  returns self. Learned state ends in `_`.
- `update(value)` folds one new observation into the learned state in O(1) (or close to
  it) so a series stays fresh between amortised refits. NaN means "no sample".
- `predict(horizon, levels)` returns a `Forecast` for steps 1..horizon after the last
  observation seen by fit/update, with non-decreasing quantiles per step.

A model that cannot fit raises `FitError`; the selector then falls back to a simpler one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable

from autoscaler.domain.types import FloatArray, Forecast

DEFAULT_LEVELS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


class FitError(RuntimeError):
    """A model could not be fitted to this series (too short, degenerate, solver failure)."""


class NotFittedError(RuntimeError):
    """predict or update was called before fit."""


@runtime_checkable
class Forecaster(Protocol):
    name: str

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self: ...

    def update(self, value: float) -> None: ...

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast: ...
