"""The serving model: FIFO backlog, patience, and what a scrape of the pods shows."""

from __future__ import annotations

import math

import pytest

from autoscaler.domain.signals import SignalKind
from autoscaler.sim.serving import ServingConfig, ServingModel


def model(**overrides: float) -> ServingModel:
    settings = {"step_seconds": 60.0, "capacity_per_replica": 1.0, "patience_seconds": 120.0, "service_seconds": 10.0}
    settings.update(overrides)
    return ServingModel(ServingConfig(**settings))  # type: ignore[arg-type]


def test_enough_replicas_serve_everything_at_once() -> None:
    serving = model()
    served = serving.step(arrival_rate=2.0, ready_replicas=3)
    assert served.served == pytest.approx(120.0)
    assert served.lost == 0.0
    assert served.observed[SignalKind.COMPLETIONS] == pytest.approx(2.0)
    assert served.observed[SignalKind.UTILIZATION] == pytest.approx(2 / 3)
    assert served.observed[SignalKind.RUNNING] == pytest.approx(20.0)
    assert served.observed[SignalKind.WAITING] == 0.0
    assert serving.totals.steps_with_backlog == 0


def test_a_backlog_is_served_oldest_first_later_and_counted_as_delayed() -> None:
    serving = model()
    first = serving.step(arrival_rate=3.0, ready_replicas=1)  # 180 arrive, 60 served, 120 wait
    assert first.observed[SignalKind.WAITING] == pytest.approx(120.0)
    assert first.observed[SignalKind.UTILIZATION] == pytest.approx(1.0)
    assert first.observed[SignalKind.ARRIVALS] == pytest.approx(3.0)
    second = serving.step(arrival_rate=0.0, ready_replicas=3)
    assert second.served == pytest.approx(120.0)
    assert serving.totals.delayed == pytest.approx(120.0)
    assert serving.totals.lost == 0.0
    assert serving.totals.steps_with_backlog == 1


def test_requests_give_up_after_the_patience() -> None:
    # 60 s ticks and 120 s patience: a request may still be served in the tick after its own.
    serving = model()
    assert serving.config.wait_ticks == 1
    serving.step(arrival_rate=2.0, ready_replicas=0)  # 120 queued
    lost = serving.step(arrival_rate=0.0, ready_replicas=0).lost  # still nobody: they give up
    assert lost == pytest.approx(120.0)
    assert serving.totals.lost_share == pytest.approx(1.0)
    assert math.isnan(serving.step(arrival_rate=0.0, ready_replicas=0).observed[SignalKind.UTILIZATION])


def test_a_long_step_is_served_in_ticks_so_a_queue_stays_visible() -> None:
    serving = model(step_seconds=600.0)
    assert serving.config.ticks_per_step == 10
    served = serving.step(arrival_rate=2.0, ready_replicas=1)
    # each tick 120 arrive and 60 are served; the last two ticks' excess is still waiting
    assert served.observed[SignalKind.WAITING] == pytest.approx(120.0)
    assert serving.totals.lost == pytest.approx(8 * 60.0)  # from the third tick on, 60 a tick give up
    assert served.observed[SignalKind.COMPLETIONS] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "bad", [{"step_seconds": 0.0}, {"capacity_per_replica": -1.0}, {"patience_seconds": -1.0}, {"tick_seconds": 0.0}]
)
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        model(**bad)
