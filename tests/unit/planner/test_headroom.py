"""Spike-aware headroom: bursts the history does not announce get priced placeholder slots."""

from __future__ import annotations

import numpy as np
import pytest

from autoscaler.domain.types import FloatArray
from autoscaler.planner.headroom import BurstModel, burst_headroom, fit_bursts
from autoscaler.planner.pipeline import RefitSchedule, TargetPipeline
from autoscaler.planner.plan import Calibration, PlannerState, plan
from tests.unit.planner.fakes import flat_forecast, make_spec, random_walk_factory

STEP = 60.0
MIDNIGHT = 1_699_920_000.0  # 2023-11-14 00:00:00 UTC
DAYS = 7
BURST_HOURS = range(10, 16)
"""Bursts come by day only, as on the LoRA traces."""
# Minute steps, pods in 180 s, new nodes 300 s later: seen one step late, a burst is
# served from its 5th step by a pod on a warm node, from its 10th by one on a new node.
# Capacity 10 a replica.
SPEC_KEYS = {"historyWindow": "7d", "maxBufferReplicas": "20"}


def daily_series(*, burst_steps: int, burst_size: float = 80.0, seed: int = 7) -> tuple[FloatArray, FloatArray]:
    """A week of a daily cycle (50 +- 20) with noise, and bursts of about `burst_size` by
    day, starting on 2.5 % of the daytime steps."""
    rng = np.random.default_rng(seed)
    steps = int(DAYS * 86400 / STEP)
    timestamps = MIDNIGHT + STEP * np.arange(steps)
    hours = (timestamps % 86400) / 3600
    values = 50 + 20 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 3, steps)
    index = 0
    while burst_steps and index < steps:
        if int(hours[index]) in BURST_HOURS and rng.random() < 0.025:
            values[index : index + burst_steps] += burst_size * rng.uniform(0.8, 1.2)
            index += burst_steps + 1
        else:
            index += 1
    return timestamps, values


def headroom_at(model: BurstModel | None, hour: float, **spec_keys: str) -> int:
    spec = make_spec(**{**SPEC_KEYS, **spec_keys})
    return burst_headroom(model, now=MIDNIGHT + DAYS * 86400 + hour * 3600, spec=spec).replicas


def test_bursts_by_day_get_headroom_by_day_only() -> None:
    spec = make_spec(**SPEC_KEYS)
    model = fit_bursts(*daily_series(burst_steps=10), spec=spec)
    assert model is not None
    assert model.bins == 24
    assert model.bursts > 40
    # Bursts of 80 (64-96) stand 50-85 above the burst threshold: 5-9 replicas of 10.
    assert 5 <= headroom_at(model, 12.5) <= 9
    assert headroom_at(model, 3.5) == 0


def test_a_smooth_series_gets_none() -> None:
    spec = make_spec(**SPEC_KEYS)
    model = fit_bursts(*daily_series(burst_steps=0), spec=spec)
    assert model is not None
    assert all(headroom_at(model, hour + 0.5) == 0 for hour in range(24))


@pytest.mark.parametrize(
    ("why", "burst_steps", "spec_keys"),
    [
        ("over before a pod on a warm node starts: only running replicas could serve it", 4, {}),
        ("no node to wait for: warm nodes buy nothing", 10, {"nodeLeadTime": "0s"}),
    ],
)
def test_bursts_that_warm_slots_cannot_serve_get_none(why: str, burst_steps: int, spec_keys: dict[str, str]) -> None:
    spec = make_spec(**{**SPEC_KEYS, **spec_keys})
    model = fit_bursts(*daily_series(burst_steps=burst_steps), spec=spec)
    assert model is not None and model.bursts > 40
    assert headroom_at(model, 12.5, **spec_keys) == 0, why


def test_a_higher_target_prices_more_headroom() -> None:
    series = daily_series(burst_steps=10)
    low, high = ({"targetCoverage": level} for level in ("0.95", "0.99"))
    low_model = fit_bursts(*series, spec=make_spec(**SPEC_KEYS, **low))
    high_model = fit_bursts(*series, spec=make_spec(**SPEC_KEYS, **high))
    assert headroom_at(high_model, 12.5, **high) > headroom_at(low_model, 12.5, **low) > 0


def test_a_high_target_on_little_history_prices_coarser_times_of_day_or_none() -> None:
    timestamps, values = daily_series(burst_steps=10)
    spec = make_spec(**SPEC_KEYS, targetCoverage="0.995")
    # 0.995 needs 200 steps a bin to see its tail at all: two days of minutes have 120 an hour.
    two_days = fit_bursts(timestamps[: 2 * 1440], values[: 2 * 1440], spec=spec)
    assert two_days is not None and two_days.bins == 12
    assert fit_bursts(timestamps[:199], values[:199], spec=spec) is None
    assert fit_bursts(timestamps, np.full_like(values, np.nan), spec=spec) is None


def test_the_plan_holds_burst_headroom_as_placeholders_and_says_so() -> None:
    model = fit_bursts(*daily_series(burst_steps=10), spec=make_spec(**SPEC_KEYS))
    wanted = headroom_at(model, 12.5)

    def decide(**spec_keys: str) -> tuple[int, int, str]:
        decision, _ = plan(
            now=MIDNIGHT + DAYS * 86400 + 12.5 * 3600,
            spec=make_spec(**{**SPEC_KEYS, **spec_keys}),
            latest_value=50.0,
            forecast=flat_forecast([50.0] * 9),
            calibration=Calibration(level=0.95, offset=0.0),
            current_replicas=5,
            state=PlannerState(),
            bursts=model,
        )
        return decision.replicas, decision.buffer_replicas, decision.reason

    replicas, buffer, reason = decide(podsPerNode="1")
    assert (replicas, buffer) == (5, wanted)
    assert f"{wanted} placeholder replicas hold" in reason
    assert "burst headroom" in reason and "outlast a pod start on a warm node (180s)" in reason
    _, buffer, reason = decide(podsPerNode="1", maxBufferReplicas="2")
    assert buffer == 2
    assert f"2 placeholder replicas (capped from {wanted}) hold" in reason


def test_the_pipeline_prices_bursts_from_its_own_history() -> None:
    pipeline = TargetPipeline(
        make_spec(**SPEC_KEYS, podsPerNode="1"),
        factory=random_walk_factory,
        schedule=RefitSchedule(min_points=24, interval_seconds=86400.0, min_interval_steps=24),
    )
    timestamps, values = daily_series(burst_steps=10)
    # The week up to 12:30 on its last day, when bursts come.
    end = len(timestamps) - int(11.5 * 3600 / STEP)
    for timestamp, value in zip(timestamps[:end], values[:end], strict=True):
        pipeline.observe(float(timestamp), float(value))
        pipeline.refit_if_due()
    decision = pipeline.decide(float(timestamps[end]), 5)
    assert decision.predictive
    assert decision.buffer_replicas > 0
    assert "burst headroom" in decision.reason
