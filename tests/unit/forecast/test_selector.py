"""Model selection by backtest, the fallback chain and the factory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Self

import numpy as np
import pytest

from autoscaler.domain.spec import MODELS
from autoscaler.domain.types import FloatArray, Forecast, ModelScore
from autoscaler.forecast import selector
from autoscaler.forecast.base import DEFAULT_LEVELS, FitError, Forecaster, NotFittedError
from autoscaler.forecast.fallback import FallbackForecaster
from autoscaler.forecast.naive import NaiveForecaster
from autoscaler.forecast.scoring import LeadErrors, pinball
from autoscaler.forecast.selector import AutoForecaster, _best, make_forecaster
from tests.unit.forecast.conftest import assert_valid_forecast, load_trace


class Exploding:
    """A forecaster whose fit raises a chosen error."""

    name = "exploding"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def fit(self, y: FloatArray, *, step_seconds: float) -> Self:
        raise self.error

    def update(self, value: float) -> None:
        raise AssertionError("never fitted")

    def predict(self, horizon: int, levels: Sequence[float] = DEFAULT_LEVELS) -> Forecast:
        raise AssertionError("never fitted")


@pytest.fixture(scope="module")
def taxi() -> tuple[FloatArray, float]:
    values, step = load_trace("nab_nyc_taxi")
    return values[: 48 * 7 * 6], step


def test_selector_picks_a_seasonal_model_on_nyc_taxi(taxi: tuple[FloatArray, float]) -> None:
    values, step = taxi
    model = AutoForecaster(lead_steps=4).fit(values, step_seconds=step)
    selection = model.selection_
    assert selection.chosen in {"seasonal_naive", "ets", "mstl", "gbm"}
    assert selection.seasonal_periods == (48, 336)
    scores = {score.model: score for score in selection.scores}
    assert set(scores) == {"naive", "seasonal_naive", "ets", "mstl", "gbm"}
    assert scores[selection.chosen].pinball < scores["naive"].pinball
    assert scores[selection.chosen].mase < 0.8 * scores["naive"].mase
    assert model.predict(4).model == selection.chosen


def test_a_failing_candidate_is_recorded_and_skipped(
    taxi: tuple[FloatArray, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    values, step = taxi
    real = selector.make_model

    def make_model(name: str, *, lead_steps: int) -> Forecaster:
        if name == "ets":
            return Exploding(np.linalg.LinAlgError("SVD did not converge"))
        return real(name, lead_steps=lead_steps)

    monkeypatch.setattr(selector, "make_model", make_model)
    auto = AutoForecaster(lead_steps=4, candidates=("ets", "seasonal_naive"))
    model = auto.fit(values[-48 * 21 :], step_seconds=step)
    scores = {score.model: score for score in model.selection_.scores}
    assert scores["ets"].failed == "LinAlgError: SVD did not converge"
    assert math.isnan(scores["ets"].mase)
    assert scores["seasonal_naive"].failed is None
    assert model.selection_.chosen == "seasonal_naive"


def test_every_candidate_failing_falls_back_to_naive(
    taxi: tuple[FloatArray, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    values, step = taxi
    real = selector.make_model

    def make_model(name: str, *, lead_steps: int) -> Forecaster:
        if name == "naive":
            return real(name, lead_steps=lead_steps)
        return Exploding(FitError(f"{name} refuses"))

    monkeypatch.setattr(selector, "make_model", make_model)
    model = AutoForecaster(lead_steps=4).fit(values[-48 * 14 :], step_seconds=step)
    failed = {score.model: score.failed for score in model.selection_.scores}
    assert failed == {
        "naive": None,
        "seasonal_naive": "FitError: seasonal_naive refuses",
        "ets": "FitError: ets refuses",
        "mstl": "FitError: mstl refuses",
        "gbm": "FitError: gbm refuses",
    }
    assert model.selection_.chosen == "naive"
    assert model.predict(4).model == "naive"


@pytest.mark.parametrize("points", [1, 2, 5, 20, 37])
def test_short_history_uses_naive_without_a_backtest(points: int) -> None:
    series = np.linspace(10, 20, points)
    model = AutoForecaster(lead_steps=4).fit(series, step_seconds=60.0)
    assert model.selection_.chosen == "naive"
    assert model.selection_.scores == ()
    assert_valid_forecast(model.predict(4), horizon=4, levels=DEFAULT_LEVELS, nonnegative=True)


def test_patternless_noise_stays_naive_unless_beaten() -> None:
    series = np.random.default_rng(5).normal(100, 10, 600)
    model = AutoForecaster(lead_steps=3).fit(series, step_seconds=60.0)
    scores = {score.model: score for score in model.selection_.scores}
    chosen = model.selection_.chosen
    assert chosen == "naive" or scores[chosen].pinball < scores["naive"].pinball


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([("naive", 1.0, None), ("ets", 0.5, None)], "ets"),
        ([("naive", 1.0, None), ("ets", 1.0, None)], "naive"),  # a tie is not support
        ([("naive", 1.0, None), ("ets", 2.0, None), ("gbm", 0.9, None)], "gbm"),
        ([("naive", 1.0, None), ("ets", 0.1, "FitError: x")], "naive"),
        ([("naive", math.nan, "no actuals"), ("ets", math.nan, "no actuals")], "naive"),
        ([("ets", 0.5, None), ("gbm", 0.4, None)], "gbm"),
    ],
)
def test_best_rule(scores: list[tuple[str, float, str | None]], expected: str) -> None:
    table = [ModelScore(model=m, mase=p, pinball=p, coverage=0.9, failed=f) for m, p, f in scores]
    assert _best(table) == expected


def test_fallback_chain_records_failures_and_serves_the_next() -> None:
    chain = FallbackForecaster((Exploding(ValueError("bad data")), NaiveForecaster()))
    assert chain.name == "exploding"
    with pytest.raises(NotFittedError):
        chain.predict(2)
    chain.fit(np.array([1.0, 2.0, 3.0]), step_seconds=60.0)
    assert chain.selection_.chosen == "naive"
    (failure,) = chain.selection_.scores
    assert (failure.model, failure.failed) == ("exploding", "ValueError: bad data")
    assert chain.predict(2).model == "naive"


def test_fallback_chain_with_no_survivor_is_a_fit_error() -> None:
    chain = FallbackForecaster((Exploding(FitError("a")), NaiveForecaster()))
    with pytest.raises(FitError, match="every model in the chain failed: exploding: FitError: a; naive"):
        chain.fit(np.full(3, np.nan), step_seconds=60.0)


def test_bugs_are_not_swallowed_by_the_fallback() -> None:
    chain = FallbackForecaster((Exploding(TypeError("a bug")), NaiveForecaster()))
    with pytest.raises(TypeError, match="a bug"):
        chain.fit(np.ones(3), step_seconds=60.0)


@pytest.mark.parametrize(
    ("name", "served_by_short_history"),
    [
        ("auto", "naive"),
        ("naive", "naive"),
        ("seasonal_naive", "naive"),
        ("ets", "naive"),
        ("mstl", "naive"),
        ("gbm", "naive"),
    ],
)
def test_factory_covers_every_metadata_model(name: str, served_by_short_history: str) -> None:
    assert name in MODELS
    forecaster = make_forecaster(name, lead_steps=3)
    assert forecaster.name == name
    assert forecaster.fit(np.array([4.0, 5.0]), step_seconds=60.0).predict(3).model == served_by_short_history


def test_factory_covers_exactly_the_spec_models() -> None:
    for name in MODELS:
        make_forecaster(name, lead_steps=1)
    with pytest.raises(ValueError, match="unknown model 'prophet'"):
        make_forecaster("prophet", lead_steps=1)


def test_upper_tail_pinball_prefers_the_model_whose_tail_holds_the_bursts() -> None:
    """A sharp median with a thin tail wins on every level alike, loses on the tail a plan uses."""
    levels = (0.1, 0.5, 0.9, 0.95, 0.99)
    actual = np.array([100.0] * 18 + [300.0, 300.0])  # bursts on 10 % of the steps
    sharp = LeadErrors(actual=actual, quantiles=np.tile([99.0, 100.0, 101.0, 102.0, 103.0], (20, 1)), levels=levels)
    wide = LeadErrors(actual=actual, quantiles=np.tile([40.0, 160.0, 200.0, 300.0, 320.0], (20, 1)), levels=levels)
    tail = (0.9, 0.95, 0.99)
    assert sharp.score("sharp", 1.0).pinball < wide.score("wide", 1.0).pinball
    assert wide.score("wide", 1.0, pinball_levels=tail).pinball < sharp.score("sharp", 1.0, pinball_levels=tail).pinball
    expected = pinball(actual, wide.quantiles[:, 2:], tail)
    assert wide.score("wide", 1.0, pinball_levels=tail).pinball == pytest.approx(expected)
