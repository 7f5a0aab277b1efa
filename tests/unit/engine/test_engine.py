"""The engine on virtual time over a replayed real trace.

The replay source is the demo's real adapter; `SwitchableSource` wraps it to inject
outages and empty answers, faults that the integration tests reproduce again on a real
Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.domain.signals import ReplicaCounts
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.domain.types import TargetKey
from autoscaler.engine.api import NoKubernetesAccessError, UnknownEndpointError
from autoscaler.engine.engine import Engine, EngineSettings, first_step_to_refetch
from autoscaler.sim.trace import parse_trace
from tests.traces import trace_path
from tests.unit.engine.switchable_source import SwitchableSource

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


@pytest.fixture
def source() -> SwitchableSource:
    trace = parse_trace(trace_path("nasa_http_jul95").read_text().splitlines())
    replay = ReplayTrace(name="nasa", values=trace.values, step_seconds=60.0, origin=ORIGIN, offset_rows=2 * 1440)
    return SwitchableSource(ReplaySource([replay]))


async def started_engine(source: SwitchableSource, *, speed: float = SPEED) -> tuple[Engine, ScaledClock]:
    clock = ScaledClock(start=ORIGIN, speed=speed)
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
        # The replay took virtual minutes at this speed: the next steps catch up first.
        await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.READY, timeout=30)
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
        # The first answer comes with the model the replayed history chose.
        assert first is not None and first.decision is not None and first.chosen_model is not None
        await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.READY, timeout=30)
        snapshot = engine.snapshot().targets[key]
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


@pytest.mark.parametrize("fault", ["empty", "down"])
async def test_a_data_gap_holds_the_last_plan_until_stale_after_then_unavailable(
    served: Served, source: SwitchableSource, fault: str
) -> None:
    """Empty answers and a failed query: no plan from stale data, and never a low one."""
    engine, clock, key = served
    setattr(source, fault, True)
    # The first step that sees the gap says why; from then on the plan is not recomputed.
    await wait_until(lambda: engine.snapshot().targets[key].last_error is not None)
    held = engine.snapshot().targets[key].decision
    assert held is not None
    seen = []
    while (target := engine.snapshot().targets[key]).status is TargetStatus.READY:
        assert target.decision is held, "the plan was recomputed during a data gap"
        seen.append(clock.now())
        await asyncio.sleep(0.01)
    assert target.status is TargetStatus.STALE and not target.servable  # the gRPC layer answers UNAVAILABLE
    assert target.decision is held
    assert target.last_sample_at is not None
    assert clock.now() - target.last_sample_at >= 5 * 60  # held for staleAfter, not less
    assert seen, "the last plan was not served during the gap"


async def test_a_stale_series_is_unavailable_though_its_value_is_still_answered(
    served: Served, source: SwitchableSource
) -> None:
    """Freshness is the age of the newest sample's own timestamp, not the query time."""
    engine, clock, key = served
    frozen = clock.now()
    source.frozen_at = frozen
    calls = source.instant_calls
    await wait_until(lambda: engine.snapshot().targets[key].last_error is not None)
    stale = engine.snapshot().targets[key]
    assert stale.status is TargetStatus.STALE
    assert source.instant_calls - calls >= 5, "answers kept coming while the series aged"
    assert stale.last_sample_at is not None and stale.last_sample_at <= frozen
    assert stale.last_error is not None and "old" in stale.last_error
    later = clock.now()
    await wait_until(lambda: clock.now() - later >= 3 * 60)
    assert engine.snapshot().targets[key].decision is stale.decision, "a plan was made from the old value"
    assert engine.snapshot().targets[key].status is TargetStatus.STALE
    source.frozen_at = None
    await wait_until(lambda: engine.snapshot().targets[key].status is TargetStatus.READY)


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
    # 40 warm-start replays, and a rebuild each at its daily boundary: the cheapest model,
    # and a slower clock, so replays in one thread do not outrun staleAfter.
    engine, _ = await started_engine(source, speed=SPEED / 4)
    metadata = {**METADATA, "model": "naive"}
    keys = [target_key("web", f"nasa-{index}", metadata) for index in range(40)]

    def all_are(status: TargetStatus) -> bool:
        snapshots = [engine.snapshot().get(key) for key in keys]
        return all(snapshot is not None and snapshot.status is status for snapshot in snapshots)

    try:
        for key in keys:
            engine.ensure_target(key, parse_spec(metadata))
        await wait_until(lambda: all_are(TargetStatus.READY), timeout=120)
        source.down = True
        await wait_until(lambda: all_are(TargetStatus.STALE))
        source.down = False
        await wait_until(lambda: all_are(TargetStatus.READY))
    finally:
        await engine.stop()
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


async def test_a_fleet_waiting_for_its_warm_start_reads_a_window_per_fit_slot(source: SwitchableSource) -> None:
    """The window is read when the replay's slot is free: a fleet of 12 asks for (and
    holds) at most as many windows at once as fits may run, never all 12."""
    source.range_seconds, source.window_seconds = 0.05, parse_spec(METADATA).history_window_seconds
    engine, _ = await started_engine(source)
    metadata = {**METADATA, "model": "naive"}
    keys = [target_key("web", f"nasa-{index}", metadata) for index in range(12)]
    try:
        for key in keys:
            engine.ensure_target(key, parse_spec(metadata))
        for key in keys:
            assert await engine.wait_for_target(key, timeout=60) is not None
    finally:
        await engine.stop()
    assert 1 <= source.most_windows_in_flight <= EngineSettings().concurrent_fits


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


HISTORY_ROWS = 2 * 1440
SIGNALS_AND_REPLICAS = {
    "arrivalsQuery": "replay:arrivals",
    "podsQuery": "replay:pods",
    "replicaSource": "prometheus",
    "replicasQuery": "replay:ready",
    "prometheus": "replay",
    "capacityPerReplica": "20",
    "historyWindow": "1d",
}


@contextlib.asynccontextmanager
async def serving_series(series: dict[str, np.ndarray], metadata: dict[str, str]) -> AsyncIterator[Served]:
    """An engine serving one target over synthetic series `replay:<name>`; row HISTORY_ROWS is at ORIGIN."""
    traces = [
        ReplayTrace(name=name, values=values, step_seconds=60.0, origin=ORIGIN, offset_rows=HISTORY_ROWS)
        for name, values in series.items()
    ]
    engine, clock = await started_engine(SwitchableSource(ReplaySource(traces)))
    key = target_key("llm", "synthetic", metadata)
    try:
        engine.ensure_target(key, parse_spec(metadata))
        await engine.wait_for_target(key, timeout=30)
        yield engine, clock, key
    finally:
        await engine.stop()


def step_change(before: float, after: float, *, at_row: int = HISTORY_ROWS + 2) -> np.ndarray:
    values = np.full(HISTORY_ROWS + 1000, before)
    values[at_row:] = after
    return values


async def test_plans_start_from_the_observed_replicas_when_the_hpa_does_not_follow() -> None:
    """The HPA went to 7 ready (another trigger winning, a fallback) while our plan asked
    for 2: the scale-down is counted from the 7 observed, not from a last plan that never
    happened, so the rate limit holds it above the demand's 2 at first; it then goes on
    down to 2 at 50 %/min though the HPA still holds 7."""
    # An hour after the warm start, so the change comes live, after the replay (virtual minutes here).
    held_from = HISTORY_ROWS + 60
    series = {
        "arrivals": step_change(30.0, 30.0),
        "pods": step_change(2.0, 7.0, at_row=held_from),
        "ready": step_change(2.0, 7.0, at_row=held_from),
    }
    async with serving_series(series, SIGNALS_AND_REPLICAS) as (engine, clock, key):  # demand 30 needs 2
        start = ORIGIN + 60 * 60.0
        await wait_until(lambda: clock.now() - start >= 90)
        decision = engine.snapshot().targets[key].decision
        # Counted from a last plan of 2, nothing would limit it; from the 7 observed it is.
        assert decision is not None and decision.replicas > 2, decision
        assert "scale-down limited to 50%/min" in decision.reason, decision
        await wait_until(lambda: clock.now() - start >= 5 * 60)
        decision = engine.snapshot().targets[key].decision
        assert decision is not None and decision.replicas == 2, decision
        assert engine._targets[key].pipeline.observed_replicas == ReplicaCounts(ready=7)


async def test_a_pod_that_stops_reporting_does_not_scale_the_target_down() -> None:
    """Four ready pods, one of whose scrape goes missing: the sum reads 3/4 of the demand,
    the pod count says 3 of 4 reported, and the target holds its replicas (as the HPA
    does with missing pods) instead of planning for the lower sum."""
    series = {"arrivals": step_change(80.0, 60.0), "pods": step_change(4.0, 3.0), "ready": step_change(4.0, 4.0)}
    metadata = {**SIGNALS_AND_REPLICAS, "model": "naive"}  # 80 needs 4 replicas, 60 would need 3
    async with serving_series(series, metadata) as (engine, clock, key):
        await wait_until(lambda: clock.now() >= ORIGIN + 15 * 60)  # 13 steps after the pod went silent
        decision = engine.snapshot().targets[key].decision
        assert decision is not None and decision.replicas >= 4, decision
        assert "did not report" in decision.reason


async def test_a_kubernetes_replica_source_without_api_access_is_refused(source: SwitchableSource) -> None:
    """The daemon found no service account or kubeconfig: INVALID_ARGUMENT naming the key."""
    engine, _ = await started_engine(source)
    metadata = {**METADATA, "replicaSource": "kubernetes", "workloadName": "web"}
    try:
        with pytest.raises(NoKubernetesAccessError, match="'replicaSource'") as refused:
            engine.ensure_target(target_key("web", "nasa", metadata), parse_spec(metadata))
        assert isinstance(refused.value, UnknownEndpointError)  # what the gRPC layer maps to INVALID_ARGUMENT
        assert engine.snapshot().targets == {}
    finally:
        await engine.stop()


async def test_a_utilisation_target_restarts_near_the_replicas_that_run() -> None:
    """20 ready replicas at 70 % (target 75 %): the warm start reads the ready counts beside
    the utilisation, so the first answer after a restart is near 20, not minReplicas."""
    series = {"util": step_change(0.7, 0.7), "ready": step_change(20.0, 20.0)}
    metadata = {
        "utilizationQuery": "replay:util",
        "targetUtilization": "0.75",
        "replicaSource": "prometheus",
        "replicasQuery": "replay:ready",
        "prometheus": "replay",
        "historyWindow": "1d",
        "maxReplicas": "100",
    }
    async with serving_series(series, metadata) as (engine, _, key):
        first = engine.snapshot().targets[key].decision
        assert first is not None and 18 <= first.replicas <= 22, first
