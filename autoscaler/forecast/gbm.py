"""Gradient-boosted quantile regression on lag features (direct multi-horizon).

One `GradientBoostingRegressor(loss="quantile")` per fitted quantile learns the
value h steps ahead from features at the origin, with h itself a feature, so a single
model per quantile covers every horizon up to `max_horizon` (rows are origins times
anchor horizons 1, 2, 4, ..., max_horizon). Other levels are interpolated in normal
score (`bands.interpolate_levels`).

Every feature and the target are divided by the recent level (mean of the last
`level_window` steps, floored at a tenth of the series' mean absolute value), so
trees learn shapes, not magnitudes: a level shift or a series a million times larger
looks the same to them. Fit cost is bounded by `max_rows` and `n_estimators`.

Quantile trees fitted in-sample are over-confident, so the outer quantiles are
conformalised (conformalized quantile regression): the models learn on the older
`1 - calibration_share` of the rows, and the outer band is widened (or narrowed) by
the score that makes it cover its nominal share of the newest rows.

The classic single-threaded `GradientBoostingRegressor`, not `HistGradientBoosting`:
the histogram version runs OpenMP threads in fit and predict; on a shared node with
other busy processes a 3000-row fit took 36 s instead of 0.7 s, and every predict
paid tens of milliseconds of thread wake-up. The daemon forecasts many series per
step on at most half a core, so a predictable single thread wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import sklearn
from sklearn.ensemble import GradientBoostingRegressor

from autoscaler.domain.types import FloatArray, Forecast
from autoscaler.forecast.bands import IntArray, anchor_horizons, assemble_forecast, interpolate_levels
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError
from autoscaler.forecast.estimator import Estimator
from autoscaler.forecast.level import level_floor
from autoscaler.forecast.prepare import (
    bridge_gaps,
    check_levels,
    check_request,
    check_step,
    clean_series,
    is_nonnegative,
    trim_leading_gaps,
)
from autoscaler.forecast.seasonality import MIN_CYCLES, detect_periods
from autoscaler.forecast.window import RecentWindow

LEAF = -1
LONG_WINDOW_FACTOR = 8
MIN_ROWS = 60


class _LagFeatures:
    """Feature rows for (origin, horizon) pairs over a gap-free array."""

    def __init__(self, *, lags: tuple[int, ...], level_window: int, periods: tuple[int, ...], max_horizon: int) -> None:
        self.lags = lags
        self.level_window = level_window
        self.periods = periods
        self.max_horizon = max_horizon

    @property
    def history_needed(self) -> int:
        """Steps before and including the origin that the features read."""
        long_window = LONG_WINDOW_FACTOR * self.level_window
        seasonal = max((period + self.level_window for period in self.periods), default=0)
        return max(max(self.lags) + 1, long_window, seasonal)

    def level(self, cumulative: FloatArray, origins: IntArray, floor: float) -> FloatArray:
        recent = (cumulative[origins + 1] - cumulative[origins + 1 - self.level_window]) / self.level_window
        return np.maximum(np.abs(recent), floor)

    def rows(
        self, filled: FloatArray, origins: IntArray, horizons: IntArray, floor: float
    ) -> tuple[FloatArray, FloatArray]:
        """(features, level) for each origin/horizon pair (equal-length arrays)."""
        cumulative = np.concatenate(([0.0], np.cumsum(filled)))
        level = self.level(cumulative, origins, floor)
        window = self.level_window
        long_window = LONG_WINDOW_FACTOR * window
        matrix = np.empty((origins.size, 3 + len(self.lags) + 2 * len(self.periods)))
        matrix[:, 0] = np.minimum(horizons, self.max_horizon)
        matrix[:, 1] = (cumulative[origins + 1] - cumulative[origins + 1 - long_window]) / long_window
        matrix[:, 2 : 2 + len(self.lags)] = filled[origins[:, np.newaxis] - np.array(self.lags)]
        column = 2 + len(self.lags)
        matrix[:, column] = filled[(origins + 1 - window)[:, np.newaxis] + np.arange(window)].max(axis=1)
        for period in self.periods:
            cycles_back = -(-horizons // period)
            matrix[:, column + 1] = filled[origins + horizons - cycles_back * period]
            season_ago = cumulative[origins + 1 - period] - cumulative[origins + 1 - period - window]
            matrix[:, column + 2] = season_ago / window
            column += 2
        matrix[:, 1:] /= level[:, np.newaxis]
        return matrix, level


class _PackedTrees:
    """Fitted boosting ensembles (one per quantile) as padded node arrays, evaluated together.

    sklearn's own predict spends ~1 ms per call validating its input, which is most
    of the cost of forecasting one series per step; these arrays give the same
    numbers (the trees compare float32 features, so we do too) in tens of microseconds,
    and every quantile's trees descend in the same few numpy operations.
    """

    def __init__(self, models: Sequence[Any], sample: FloatArray) -> None:
        per_model = [[estimator.tree_ for estimator in model.estimators_[:, 0]] for model in models]
        trees = [tree for model_trees in per_model for tree in model_trees]
        width = max(tree.node_count for tree in trees)
        starts = np.arange(len(trees), dtype=np.int64) * width

        def padded(attribute: str, fill: float) -> FloatArray:
            out = np.full((len(trees), width), fill)
            for index, tree in enumerate(trees):
                column = np.asarray(getattr(tree, attribute), dtype=np.float64).reshape(tree.node_count)
                out[index, : tree.node_count] = column
            return out.ravel()

        def children(attribute: str) -> IntArray:
            # Flat node indices; a leaf (and padding) points at itself, so descending
            # the full depth parks every row on its leaf without a leaf test.
            child = padded(attribute, LEAF).astype(np.int64).reshape(len(trees), width)
            own = np.arange(width, dtype=np.int64)[np.newaxis, :]
            flat: IntArray = (np.where(child == LEAF, own, child) + starts[:, np.newaxis]).ravel()
            return flat

        rates = np.repeat([model.learning_rate for model in models], [len(model_trees) for model_trees in per_model])
        self.feature = np.maximum(padded("feature", 0), 0).astype(np.int64)
        self.threshold = padded("threshold", 0.0)
        self.left = children("children_left")
        self.right = children("children_right")
        self.value = (padded("value", 0.0).reshape(len(trees), width) * rates[:, np.newaxis]).ravel()
        self.depth = max(tree.max_depth for tree in trees)
        self.roots = starts[:, np.newaxis]
        self.first_tree = np.cumsum([0, *(len(model_trees) for model_trees in per_model[:-1])])
        self.offset: FloatArray = np.zeros(len(models))
        first_row = sample[:1]
        own_prediction = self.predict(first_row)[0]
        self.offset = np.array([model.predict(first_row)[0] for model in models]) - own_prediction

    def predict(self, matrix: FloatArray) -> FloatArray:
        """(rows, models): each model's prediction for each feature row."""
        # A window of zeros has a tiny level floor, so a later nonzero value divided by it
        # passes float32's range; as infinity it still goes right at every split, as it should.
        with np.errstate(over="ignore"):
            features = matrix.astype(np.float32).astype(np.float64).ravel()
        row_starts = np.arange(matrix.shape[0], dtype=np.int64)[np.newaxis, :] * matrix.shape[1]
        node = np.repeat(self.roots, matrix.shape[0], axis=1)
        for _ in range(self.depth):
            goes_left = features.take(row_starts + self.feature.take(node)) <= self.threshold.take(node)
            node = np.where(goes_left, self.left.take(node), self.right.take(node))
        sums = np.add.reduceat(self.value.take(node), self.first_tree, axis=0)
        total: FloatArray = sums.T + self.offset
        return total


class GBMForecaster(Estimator):
    name = "gbm"

    def __init__(
        self,
        *,
        max_horizon: int = 32,
        quantiles: tuple[float, ...] = (0.05, 0.5, 0.95),
        periods: tuple[int, ...] | None = None,
        lags: tuple[int, ...] = (0, 1, 2, 4, 8, 16),
        level_window: int = 10,
        min_cycles: float = MIN_CYCLES,
        max_rows: int = 1000,
        calibration_share: float = 0.2,
        n_estimators: int = 30,
        learning_rate: float = 0.15,
        max_depth: int = 3,
        subsample: float = 0.7,
        random_state: int = 0,
    ) -> None:
        self.max_horizon = max_horizon
        self.quantiles = quantiles
        self.periods = periods
        self.lags = lags
        self.level_window = level_window
        self.min_cycles = min_cycles
        self.max_rows = max_rows
        self.calibration_share = calibration_share
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.random_state = random_state

    def _features_for(self, values: FloatArray, step: float) -> _LagFeatures:
        periods = (
            self.periods
            if self.periods is not None
            else detect_periods(values, step_seconds=step, min_cycles=self.min_cycles)
        )
        affordable = tuple(
            period for period in periods if values.size - (period + self.level_window) - self.max_horizon >= MIN_ROWS
        )
        return _LagFeatures(
            lags=self.lags, level_window=self.level_window, periods=affordable, max_horizon=self.max_horizon
        )

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        values = trim_leading_gaps(clean_series(y))
        step = check_step(step_seconds)
        if len(check_levels(self.quantiles)) < 2:
            raise ValueError(f"quantiles needs at least two levels, got {self.quantiles}")
        features = self._features_for(values, step)
        filled = bridge_gaps(values)
        floor = level_floor(values)
        horizons = np.unique(np.array((*anchor_horizons(self.max_horizon), self.max_horizon), dtype=np.int64))
        first_origin = features.history_needed - 1
        last_origin = values.size - 1 - horizons[0]
        per_origin = max(1, self.max_rows // horizons.size)
        origins = np.arange(max(first_origin, last_origin - per_origin + 1), last_origin + 1, dtype=np.int64)
        pair_origins = np.repeat(origins, horizons.size)
        pair_horizons = np.tile(horizons, origins.size)
        inside = pair_origins + pair_horizons < values.size
        pair_origins, pair_horizons = pair_origins[inside], pair_horizons[inside]
        targets = values[pair_origins + pair_horizons] if pair_origins.size else np.empty(0)
        observed = np.isfinite(targets)
        if observed.sum() < MIN_ROWS:
            raise FitError(f"GBM needs {MIN_ROWS} training rows, {values.size} points give {int(observed.sum())}")
        matrix, level = features.rows(filled, pair_origins[observed], pair_horizons[observed], floor)
        ratios = targets[observed] / level
        split = ratios.size - int(self.calibration_share * ratios.size)
        fitted = [self._fit_quantile(matrix[:split], ratios[:split], quantile) for quantile in self.quantiles]
        models = _PackedTrees(fitted, matrix)
        self.widening_ = self._conformal_widening(models, matrix[split:], ratios[split:])
        self.models_ = models
        self.features_ = features
        self.floor_ = floor
        self.recent_ = RecentWindow(filled, features.history_needed + self.max_horizon)
        self.step_seconds_ = step
        self.last_ = float(filled[-1])
        self.nonnegative_ = is_nonnegative(values)
        return self

    def _conformal_widening(self, models: _PackedTrees, matrix: FloatArray, ratios: FloatArray) -> float:
        """The CQR score: how far the outer quantiles must move to cover their nominal share."""
        if ratios.size == 0:
            return 0.0
        nominal = max(self.quantiles) - min(self.quantiles)
        predicted = models.predict(matrix)
        lower, upper = predicted[:, 0], predicted[:, -1]
        scores = np.maximum(lower - ratios, ratios - upper)
        rank = min(1.0, nominal * (ratios.size + 1) / ratios.size)
        return float(np.quantile(scores, rank))

    def _fit_quantile(self, matrix: FloatArray, ratios: FloatArray, quantile: float) -> Any:
        model = GradientBoostingRegressor(
            loss="quantile",
            alpha=quantile,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            max_depth=self.max_depth,
            subsample=self.subsample,
            random_state=self.random_state,
        )
        if not (np.isfinite(matrix).all() and np.isfinite(ratios).all()):
            raise FitError(f"GradientBoostingRegressor(alpha={quantile}) failed: non-finite features or targets")
        try:
            # Hyperparameters and finiteness are checked once here; inside, each of the
            # n_estimators trees would check them again, a tenth of the fit.
            model._validate_params()
            with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
                return model.fit(matrix, ratios)
        except (ValueError, ArithmeticError) as error:
            raise FitError(f"GradientBoostingRegressor(alpha={quantile}) failed: {error}") from error

    def update(self, value: float) -> None:
        self._require_fitted()
        if math.isfinite(value):
            self.last_ = float(value)
            self.nonnegative_ = self.nonnegative_ and value >= 0.0
            self.recent_.append(float(value))
        else:
            # Holding the last value keeps the lag features defined through a gap.
            self.recent_.append(self.last_)

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        self._require_fitted()
        checked = check_request(horizon, levels)
        recent = self.recent_.ordered()
        horizons = np.arange(1, horizon + 1, dtype=np.int64)
        origins = np.full(horizon, recent.size - 1, dtype=np.int64)
        matrix, level = self.features_.rows(recent, origins, horizons, self.floor_)
        ratios = self.models_.predict(matrix)
        ratios[:, 0] -= self.widening_
        ratios[:, -1] += self.widening_
        values = interpolate_levels(ratios * level[:, np.newaxis], self.quantiles, checked)
        return assemble_forecast(
            np.zeros(horizon),
            values,
            levels=checked,
            step_seconds=self.step_seconds_,
            model=self.name,
            nonnegative=self.nonnegative_,
            fallback_value=self.last_,
        )
