"""The engine on virtual time over a replayed real trace.

The replay source is the demo's real adapter; `SwitchableSource` wraps it to inject
outages and empty answers, faults that the integration tests reproduce again on a real
Prometheus.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySample, ReplaySource, ReplayTrace
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.engine.api import UnknownEndpointError
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.sim.trace import parse_trace

TRACES = Path(__file__).parents[4] / "shared" / "traces"
ORIGIN = 1_700_000_000.0
SPEED = 600.0  # a 60 s step passes in 100 ms of wall time

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


async def test_outage_keeps_last_plan_then_goes_stale_then_backfills(source: SwitchableSource) -> None:
    engine, clock = await started_engine(source)
    key = target_key("web", "nasa", METADATA)
    try:
        engine.ensure_target(key, parse_spec(METADATA))
        first = await engine.wait_for_target(key, timeout=30)
        assert first is not None and first.decision is not None
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
    finally:
        await engine.stop()


async def test_empty_answers_never_become_zero(source: SwitchableSource) -> None:
    engine, _ = await started_engine(source)
    key = target_key("web", "nasa", METADATA)
    try:
        engine.ensure_target(key, parse_spec(METADATA))
        await engine.wait_for_target(key, timeout=30)
        source.empty = True
        await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.STALE)
        stale = engine.snapshot().targets[key]
        assert stale.decision is not None and stale.decision.replicas >= 1
        assert not stale.servable
    finally:
        await engine.stop()


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
