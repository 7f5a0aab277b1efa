from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.domain.types import Selection
from autoscaler.forecast.base import FitError, Forecaster
from autoscaler.planner.pipeline import ForecasterFactory, RefitSchedule, TargetPipeline, fit_for
from tests.traces import trace_path
from tests.unit.planner.fakes import RandomWalkForecaster, make_spec, random_walk_factory

STEP = 60.0
SCHEDULE = RefitSchedule(min_points=10, growth=2.0, interval_seconds=3600.0, min_interval_steps=10)


def make_pipeline(**spec_keys: str) -> TargetPipeline:
    return TargetPipeline(make_spec(**spec_keys), factory=random_walk_factory, schedule=SCHEDULE)


def feed(pipeline: TargetPipeline, values: list[float], *, start: int = 0) -> float:
    """Observe values at consecutive steps with the engine's loop; returns the next 'now'."""
    for offset, value in enumerate(values):
        now = (start + offset) * STEP
        pipeline.refit_if_due()
        pipeline.decide(now, 5)
        pipeline.observe(now, value)
    return (start + len(values)) * STEP


def test_cold_start_is_reactive_until_the_first_fit() -> None:
    pipeline = make_pipeline()
    for step in range(5):
        pipeline.observe(step * STEP, 100.0)
    assert not pipeline.refit_due()
    decision = pipeline.decide(5 * STEP, 3)
    assert not decision.predictive
    assert decision.replicas == decision.reactive_replicas == 10
    assert "cold start: 5 steps of history, forecasting from 10" in decision.reason
    now = feed(pipeline, [100.0] * 10, start=5)
    assert pipeline.decide(now, 10).predictive
    assert pipeline.chosen_model == "random-walk"


def test_refits_double_while_short_then_follow_the_interval() -> None:
    pipeline = make_pipeline()
    fitted_at: list[int] = []
    for step in range(200):
        pipeline.observe(step * STEP, 50.0 + step % 7)
        if pipeline.refit_due():
            fitted_at.append(len(pipeline.history()[1]))
            pipeline.install(fit_for(pipeline.refit_inputs()))
    # Doubling while short (10, 20, 40) and where the data crosses the 3600 s grid (60 steps).
    assert fitted_at == [10, 20, 40, 60, 120, 180]


def test_install_replays_points_observed_since_the_copy() -> None:
    pipeline = make_pipeline()
    feed(pipeline, [float(v) for v in range(20)])
    inputs = pipeline.refit_inputs()
    for step in range(20, 25):
        pipeline.observe(step * STEP, 1000.0 + step)
    fitted = fit_for(inputs)
    pipeline.install(fitted)
    forecaster = fitted.forecaster
    assert isinstance(forecaster, RandomWalkForecaster)
    assert forecaster.updates_ == 5
    assert forecaster.last_ == 1024.0


def test_an_older_fit_does_not_replace_a_newer_one() -> None:
    pipeline = make_pipeline()
    feed(pipeline, [10.0] * 20)
    old_inputs = pipeline.refit_inputs()
    feed(pipeline, [10.0] * 5, start=20)
    newer = fit_for(pipeline.refit_inputs())
    pipeline.install(newer)
    pipeline.install(fit_for(old_inputs))
    assert pipeline._forecaster is newer.forecaster


class _Failing:
    name = "failing"

    def fit(self, y: np.ndarray, *, step_seconds: float) -> _Failing:
        raise FitError("degenerate")

    def update(self, value: float) -> None:
        raise AssertionError("never fitted")

    def predict(self, horizon: int, levels: object = ()) -> object:
        raise AssertionError("never fitted")


def _auto_fails(model: str, lead_steps: int) -> Forecaster:
    return _Failing() if model == "auto" else RandomWalkForecaster()  # type: ignore[return-value]


def _all_fail(model: str, lead_steps: int) -> Forecaster:
    return _Failing()  # type: ignore[return-value]


def test_fit_falls_back_to_naive_then_stays_reactive() -> None:
    pipeline = TargetPipeline(make_spec(), factory=_auto_fails, schedule=SCHEDULE)
    feed(pipeline, [5.0] * 12)
    assert pipeline.chosen_model == "random-walk"
    assert pipeline.last_fit_error == "auto: degenerate"
    broken = TargetPipeline(make_spec(), factory=_all_fail, schedule=SCHEDULE)
    now = feed(broken, [5.0] * 12)
    decision = broken.decide(now, 1)
    assert not decision.predictive
    assert broken.last_fit_error == "auto: degenerate; naive: degenerate"


def test_gaps_update_the_model_with_nan_and_stale_history_is_reactive() -> None:
    pipeline = make_pipeline()
    feed(pipeline, [40.0] * 12)
    forecaster = pipeline._forecaster
    assert isinstance(forecaster, RandomWalkForecaster)
    before = forecaster.updates_
    pipeline.observe(15 * STEP, 60.0)  # steps 12-14 missing
    assert forecaster.updates_ == before + 4
    assert pipeline.decide(16 * STEP, 4).predictive
    stale = pipeline.decide(30 * STEP, 4)
    assert not stale.predictive
    assert "history is stale" in stale.reason


ADVERSARIAL = {
    "constant": [100.0] * 120,
    "all zeros": [0.0] * 120,
    "single spike": [20.0] * 60 + [5000.0] + [20.0] * 59,
    "NaN run": [30.0] * 40 + [math.nan] * 30 + [30.0] * 50,
    "step change": [10.0] * 60 + [400.0] * 60,
    "leading NaN": [math.nan] * 20 + [50.0] * 100,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_series_keep_every_invariant(name: str) -> None:
    spec_keys = {"minReplicas": "1", "maxReplicas": "60", "maxBufferReplicas": "3"}
    pipeline = make_pipeline(**spec_keys)
    current = 1
    for step, value in enumerate(ADVERSARIAL[name]):
        now = step * STEP
        pipeline.refit_if_due()
        decision = pipeline.decide(now, current)
        assert 1 <= decision.replicas <= 60
        assert decision.replicas >= decision.reactive_replicas
        assert 0 <= decision.buffer_replicas <= 3
        assert decision.reason
        current = decision.replicas
        pipeline.observe(now, value)
    if name == "step change":
        assert current >= 40  # followed the new level
    if name == "all zeros":
        assert current == 1


def test_calibration_converges_on_a_real_trace() -> None:
    lines = trace_path("nab_elb_request_count").read_text().splitlines()[1:]
    values = [float(line.split(",")[1]) for line in lines]
    spec = make_spec(step="300s", historyWindow="7d", capacityPerReplica="10", targetCoverage="0.9")
    pipeline = TargetPipeline(spec, factory=random_walk_factory)
    current = 1
    for step, value in enumerate(values):
        now = step * 300.0
        pipeline.refit_if_due()
        current = pipeline.decide(now, current).replicas
        pipeline.observe(now, value)
    coverage = pipeline.achieved_coverage
    assert coverage is not None
    assert coverage == pytest.approx(0.9, abs=0.03)
    mase = pipeline.forecast_error_mase
    assert mase is not None and 0.5 < mase < 2.0


class _Selecting(RandomWalkForecaster):
    """Under `auto`, reports a selection the way the selector does."""

    def fit(self, y: np.ndarray, *, step_seconds: float) -> _Selecting:
        super().fit(y, step_seconds=step_seconds)
        self.selection_ = Selection(chosen="ets", scores=(), seasonal_periods=())
        return self


def _recording_factory(models: list[str]) -> ForecasterFactory:
    def factory(model: str, lead_steps: int) -> Forecaster:
        models.append(model)
        return _Selecting() if model == "auto" else RandomWalkForecaster()

    return factory


def test_auto_reselects_while_history_grows_then_weekly() -> None:
    models: list[str] = []
    schedule = RefitSchedule(min_points=10, interval_seconds=3600.0, min_interval_steps=1, reselect_seconds=4 * 3600.0)
    spec = make_spec(historyWindow="1h", step="60s", leadTime="60s")
    pipeline = TargetPipeline(spec, factory=_recording_factory(models), schedule=schedule)
    for step in range(60 * 10):
        pipeline.observe(step * STEP, 10.0 + step % 5)
        if pipeline.refit_due():
            pipeline.install(fit_for(pipeline.refit_inputs()))
    assert models[:3] == ["auto", "auto", "auto"]  # 10, 20, 40 points: history still growing
    # At each hour of data; auto where the data crosses the 4-hour grid (steps 240, 480).
    assert models[3:] == ["ets", "ets", "ets", "auto", "ets", "ets", "ets", "auto", "ets", "ets"]
    assert pipeline.selection is not None and pipeline.selection.chosen == "ets"
    assert pipeline.chosen_model in {"ets", "random-walk"}
