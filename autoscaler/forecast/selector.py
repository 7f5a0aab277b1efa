"""Per-series model choice by rolling-origin backtest, and the model factory.

`AutoForecaster.fit` holds out the tail of the series, fits naive and each candidate
on the rest, walks them through the tail with `update` (forecasting `lead_steps`
ahead at `folds` evenly spaced origins, as the daemon does between refits), and
keeps the candidate with the lowest scaled pinball loss at the lead horizon, but
only if it beats naive: with little or patternless history the plan stays reactive.
The winner is then refitted on the whole series behind its fallback chain.

The pinball loss is taken over the upper tail only: the planning quantile
(`planning_level`, the target coverage) and the levels from 0.9 up. The plan is sized
from that tail, so a model with a sharp median but a tail that misses the bursts
must not win on its median and lower quantiles, which counted alike before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np

from autoscaler.domain.spec import MODELS
from autoscaler.domain.types import FloatArray, Forecast, ModelScore, Selection
from autoscaler.forecast.base import DEFAULT_LEVELS, Forecaster
from autoscaler.forecast.estimator import Estimator
from autoscaler.forecast.ets import ETSForecaster
from autoscaler.forecast.fallback import FIT_FAILURES, FallbackForecaster, describe_failure
from autoscaler.forecast.gbm import GBMForecaster
from autoscaler.forecast.mstl import MSTLForecaster
from autoscaler.forecast.naive import NaiveForecaster
from autoscaler.forecast.prepare import check_step, clean_series, trim_leading_gaps
from autoscaler.forecast.scoring import lead_scale, walk_forward
from autoscaler.forecast.seasonal_naive import SeasonalNaiveForecaster
from autoscaler.forecast.seasonality import detect_periods

BASELINE = "naive"
FALLBACKS: dict[str, tuple[str, ...]] = {
    "naive": (),
    "seasonal_naive": ("naive",),
    "ets": ("seasonal_naive", "naive"),
    "mstl": ("ets", "seasonal_naive", "naive"),
    "gbm": ("seasonal_naive", "naive"),
}
SHORT_HISTORY_MARGIN = 30
SECONDS_PER_DAY = 86400.0
MIN_BACKTEST_LEADS = 8
UPPER_TAIL_LEVELS = tuple(level for level in DEFAULT_LEVELS if level >= 0.9)


def make_model(name: str, *, lead_steps: int) -> Forecaster:
    """One bare model with its defaults; the gbm learns horizons up to twice the lead."""
    if name == "naive":
        return NaiveForecaster()
    if name == "seasonal_naive":
        return SeasonalNaiveForecaster()
    if name == "ets":
        return ETSForecaster()
    if name == "mstl":
        return MSTLForecaster()
    if name == "gbm":
        return GBMForecaster(max_horizon=max(4, 2 * lead_steps))
    raise ValueError(f"unknown model {name!r}; known: {', '.join(FALLBACKS)}")


def fallback_chain(name: str, *, lead_steps: int) -> FallbackForecaster:
    models = (name, *FALLBACKS[name]) if name in FALLBACKS else (name,)
    return FallbackForecaster(tuple(make_model(model, lead_steps=lead_steps) for model in models))


def make_forecaster(name: str, *, lead_steps: int) -> Forecaster:
    """The forecaster for a scalerMetadata `model` value (see `domain.spec.MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if name == "auto":
        return AutoForecaster(lead_steps=lead_steps)
    if name == BASELINE:
        return make_model(name, lead_steps=lead_steps)
    return fallback_chain(name, lead_steps=lead_steps)


class AutoForecaster(Estimator):
    name = "auto"

    def __init__(
        self,
        *,
        lead_steps: int = 1,
        candidates: tuple[str, ...] = ("seasonal_naive", "ets", "mstl", "gbm"),
        planning_level: float = 0.95,
        folds: int = 48,
        backtest_steps: int | None = None,
        min_history: int | None = None,
    ) -> None:
        self.lead_steps = lead_steps
        self.candidates = candidates
        self.planning_level = planning_level
        self.folds = folds
        self.backtest_steps = backtest_steps
        self.min_history = min_history

    def _held_out_steps(self, size: int, step: float, lead: int) -> int:
        if self.backtest_steps is not None:
            wanted = self.backtest_steps
        else:
            wanted = max(round(SECONDS_PER_DAY / step), MIN_BACKTEST_LEADS * lead)
        return max(lead, min(wanted, size // 3))

    def _score(self, name: str, train: FloatArray, held_out: FloatArray, step: float, scale: float) -> ModelScore:
        lead = max(1, self.lead_steps)
        model = make_model(name, lead_steps=lead)
        every = max(1, (held_out.size - lead + 1) // max(1, self.folds))
        tail = tuple(sorted({self.planning_level, *UPPER_TAIL_LEVELS}))
        levels = tuple(sorted({*DEFAULT_LEVELS, *tail}))
        try:
            model.fit(train, step_seconds=step)
            errors = walk_forward(model, held_out, lead=lead, every=every, levels=levels)
            return errors.score(name, scale, pinball_levels=tail)
        except FIT_FAILURES as error:
            return ModelScore(
                model=name, mase=math.nan, pinball=math.nan, coverage=math.nan, failed=describe_failure(error)
            )

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        values = trim_leading_gaps(clean_series(y))
        step = check_step(step_seconds)
        lead = max(1, self.lead_steps)
        periods = detect_periods(values, step_seconds=step)
        min_history = self.min_history if self.min_history is not None else 2 * lead + SHORT_HISTORY_MARGIN
        scores: tuple[ModelScore, ...] = ()
        chosen = BASELINE
        if np.isfinite(values).sum() >= min_history:
            held = self._held_out_steps(values.size, step, lead)
            train, held_out = values[:-held], values[-held:]
            scale = lead_scale(train, lead)
            names = tuple(dict.fromkeys((BASELINE, *self.candidates)))
            scores = tuple(self._score(name, train, held_out, step, scale) for name in names)
            chosen = _best(scores)
        model = fallback_chain(chosen, lead_steps=lead).fit(values, step_seconds=step)
        self.model_ = model
        self.selection_ = Selection(chosen=model.active_.name, scores=scores, seasonal_periods=periods)
        return self

    def update(self, value: float) -> None:
        self._require_fitted()
        self.model_.update(value)

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        return self.model_.predict(horizon, levels)


def _best(scores: Sequence[ModelScore]) -> str:
    """Lowest pinball among the models that ran; naive unless something beats it."""
    usable = [score for score in scores if score.failed is None and math.isfinite(score.pinball)]
    baseline = next((score for score in usable if score.model == BASELINE), None)
    if not usable:
        return BASELINE
    best = min(usable, key=lambda score: (score.pinball, score.mase))
    if baseline is not None and best.pinball >= baseline.pinball:
        return BASELINE
    return best.model
