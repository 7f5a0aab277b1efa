"""The engine on virtual time over a replayed real trace.

The replay source is the demo's real adapter; `SwitchableSource` wraps it to inject
outages and empty answers, faults that the integration tests reproduce again on a real
Prometheus.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySample, ReplaySource, ReplayTrace
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.domain.types import TargetKey
from autoscaler.engine.api import UnknownEndpointError
from autoscaler.engine.engine import Engine, EngineSettings, first_step_to_refetch
from autoscaler.sim.trace import parse_trace

TRACES = Path(__file__).parents[4] / "shared" / "traces"
ORIGIN = 1_700_000_000.0
SPEED = 600.0  # a 60 s step passes in 100 ms of wall time
Served = tuple[Engine, ScaledClock, TargetKey]

METADATA = {
    "query": "replay:nasa",
    "prometheus": "replay",
    "capacityPerReplica": "20",
    "step": "60s",
    "leadTime": "180s",
    "historyWindow": "2d",
    "staleAfter": "5m",
}


class SwitchableSource:
    """Replays a trace, but can be told to fail or to return nothing."""

    def __init__(self, inner: ReplaySource) -> None:
        self.inner = inner
        self.down = False
        self.empty = False

    async def instant(self, query: str, *, at: float) -> ReplaySample | None:
        if self.down:
            raise ConnectionError("injected outage")
        return None if self.empty else await self.inner.instant(query, at=at)

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        if self.down:
            raise ConnectionError("injected outage")
        return await self.inner.range(query, start=start, end=end, step_seconds=step_seconds)

    async def close(self) -> None:
        return None


@pytest.fixture
def source() -> SwitchableSource:
    trace = parse_trace((TRACES / "nasa_http_jul95.csv").read_text().splitlines())
    replay = ReplayTrace(name="nasa", values=trace.values, step_seconds=60.0, origin=ORIGIN, offset_rows=2 * 1440)
    return SwitchableSource(ReplaySource([replay]))


async def started_engine(source: SwitchableSource) -> tuple[Engine, ScaledClock]:
    clock = ScaledClock(start=ORIGIN, speed=SPEED)
    engine = Engine(
        sources={"replay": source}, clock=clock, fit_executor=None, settings=EngineSettings(tick_seconds=0.01)
    )
    await engine.start()
    return engine, clock


@pytest.fixture
async def served(source: SwitchableSource) -> AsyncIterator[Served]:
    """A started engine with the nasa target registered and past its warm start."""
    engine, clock = await started_engine(source)
    key = target_key("web", "nasa", METADATA)
    try:
        engine.ensure_target(key, parse_spec(METADATA))
        first = await engine.wait_for_target(key, timeout=30)
        assert first is not None and first.decision is not None
        yield engine, clock, key
    finally:
        await engine.stop()


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_warm_start_plans_from_history(source: SwitchableSource) -> None:
    engine, _ = await started_engine(source)
    key = target_key("web", "nasa", METADATA)
    try:
        engine.ensure_target(key, parse_spec(METADATA))
        first = await engine.wait_for_target(key, timeout=30)
        assert first is not None and first.decision is not None  # answers before any model is fitted
        await wait_until(lambda: engine.snapshot().targets[key].chosen_model is not None, timeout=60)
        snapshot = engine.snapshot().targets[key]
        assert snapshot.status is TargetStatus.READY
        assert len(snapshot.history_values) >= 700  # two days warm-started, the view shows the tail
        assert snapshot.decision.replicas >= snapshot.decision.reactive_replicas >= 1
        assert snapshot.chosen_model is not None
        assert snapshot.decision.reason
    finally:
        await engine.stop()


async def test_unknown_endpoint_is_refused(source: SwitchableSource) -> None:
    engine, _ = await started_engine(source)
    try:
        with pytest.raises(UnknownEndpointError, match="'prometheus'"):
            engine.ensure_target(target_key("a", "b", {}), parse_spec({**METADATA, "prometheus": "other"}))
    finally:
        await engine.stop()


async def test_outage_keeps_last_plan_then_goes_stale_then_backfills(served: Served, source: SwitchableSource) -> None:
    engine, clock, key = served
    source.down = True
    outage_start = clock.now()
    await wait_until(lambda: engine.snapshot().targets[key].last_error is not None)
    during = engine.snapshot().targets[key]
    assert during.decision is not None and during.decision.replicas > 0  # last safe plan still served
    await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.STALE)
    stale = engine.snapshot().targets[key]
    assert stale.last_sample_at is not None and stale.last_sample_at <= outage_start
    assert clock.now() - stale.last_sample_at >= 5 * 60  # the last plan was kept for staleAfter
    source.down = False
    await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.READY)
    await wait_until(lambda: engine.snapshot().targets[key].last_error is None)
    recovered = engine.snapshot().targets[key]
    window = recovered.history_values[-30:]
    assert not np.isnan(window).any(), "the outage left a hole in history"


async def test_empty_answers_never_become_zero(served: Served, source: SwitchableSource) -> None:
    engine, _, key = served
    source.empty = True
    await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.STALE)
    stale = engine.snapshot().targets[key]
    assert stale.decision is not None and stale.decision.replicas >= 1
    assert not stale.servable


async def test_a_run_of_empty_answers_is_fetched_again_when_it_ends(served: Served, source: SwitchableSource) -> None:
    engine, clock, key = served
    source.empty = True
    empty_from = clock.now()
    await wait_until(lambda: clock.now() - empty_from >= 10 * 60)
    source.empty = False
    await wait_until(lambda: engine.snapshot().targets[key].last_sample_at > clock.now() - 60)
    await wait_until(lambda: engine.snapshot().targets[key].history_timestamps[-1] > empty_from + 11 * 60)
    recovered = engine.snapshot().targets[key]
    during = (recovered.history_timestamps >= empty_from) & (recovered.history_timestamps < empty_from + 10 * 60)
    assert during.sum() >= 9
    assert not np.isnan(recovered.history_values[during]).any(), "the empty run was not fetched again"


@pytest.mark.parametrize(
    ("collected_until", "missing_since", "has_value", "expected"),
    [
        (None, None, True, None),  # first collection after the warm start
        (540.0, None, True, None),  # the previous step: nothing missed
        (420.0, None, True, 480.0),  # two steps never asked for
        (420.0, None, False, 480.0),  # fetched at once, even while answers are empty
        (540.0, 300.0, True, 300.0),  # an empty run just ended
        (540.0, 300.0, False, None),  # still empty: wait for the run to end
        (420.0, 300.0, True, 300.0),  # both: from the earlier
        (420.0, 500.0, True, 480.0),
    ],
)
def test_first_step_to_refetch(
    collected_until: float | None, missing_since: float | None, has_value: bool, expected: float | None
) -> None:
    assert (
        first_step_to_refetch(
            now=600.0,
            step_seconds=60.0,
            collected_until=collected_until,
            missing_since=missing_since,
            has_value=has_value,
        )
        == expected
    )


async def test_a_fleet_on_one_step_is_published_ready_then_stale_together(
    source: SwitchableSource, caplog: pytest.LogCaptureFixture
) -> None:
    """Many targets share step boundaries and staleAfter, so their stale times tie."""
    engine, _ = await started_engine(source)
    keys = [target_key("web", f"nasa-{index}", METADATA) for index in range(40)]

    def all_are(status: TargetStatus) -> bool:
        snapshots = [engine.snapshot().get(key) for key in keys]
        return all(snapshot is not None and snapshot.status is status for snapshot in snapshots)

    try:
        for key in keys:
            engine.ensure_target(key, parse_spec(METADATA))
        await wait_until(lambda: all_are(TargetStatus.READY))
        source.down = True
        await wait_until(lambda: all_are(TargetStatus.STALE))
        source.down = False
        await wait_until(lambda: all_are(TargetStatus.READY))
    finally:
        await engine.stop()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_stop_ends_the_publisher_even_when_it_was_just_woken(source: SwitchableSource) -> None:
    """On Python 3.11, asyncio.wait_for swallows a cancellation that arrives as the
    awaited event is set (CPython gh-86296), and the publisher would then run forever."""
    clock = ScaledClock(start=ORIGIN, speed=SPEED)
    settings = EngineSettings(tick_seconds=60)
    engine = Engine(sources={"replay": source}, clock=clock, fit_executor=None, settings=settings)
    await engine.start()
    await asyncio.sleep(0.1)  # the publisher now waits for a wake-up
    engine.ensure_target(target_key("web", "nasa", METADATA), parse_spec(METADATA))  # wakes it
    await asyncio.wait_for(engine.stop(), timeout=5)


async def test_a_ready_target_keeps_one_pending_stale_check_however_many_steps_pass(served: Served) -> None:
    engine, clock, key = served
    start = clock.now()
    await wait_until(lambda: clock.now() - start >= 30 * 60)  # 30 steps
    assert engine.snapshot().targets[key].status is TargetStatus.READY
    # An entry per publish grew by one per step and stalled the loop for a large fleet.
    assert len(engine._stale_at) <= 1


async def test_a_publish_touches_only_the_targets_that_changed(
    source: SwitchableSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copying the published mapping from its read-only proxy hashed every key of the
    fleet again, once a publish: with 5,000 targets, most of the event loop's time."""
    engine = Engine(sources={"replay": source}, clock=ScaledClock(start=ORIGIN, speed=SPEED), fit_executor=None)
    keys = [target_key("web", f"nasa-{index}", METADATA) for index in range(500)]
    for key in keys:
        engine.ensure_target(key, parse_spec(METADATA))
    engine._publish()
    hashed = 0
    plain_hash = TargetKey.__hash__

    def counting_hash(key: TargetKey) -> int:
        nonlocal hashed
        hashed += 1
        return plain_hash(key)

    monkeypatch.setattr(TargetKey, "__hash__", counting_hash)
    engine._mark_dirty(engine._targets[keys[0]])
    engine._publish()
    assert len(engine.snapshot().targets) == len(keys)
    assert hashed <= 5
