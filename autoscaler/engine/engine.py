"""The only orchestrator: collect -> store -> forecast -> plan -> publish.

Each registered target runs one asyncio task on the engine's clock. A step of that
task reads every signal of the target, the age of their data and the scale target's
replica counts at once (`collection`), folds them into the target's `TargetPipeline`
(O(1)), refits when the data calls for it, plans from the replicas observed, and marks
the target dirty; a publisher task swaps in a new immutable `EngineSnapshot` once per
tick.

One answer per workload: every transition of a target is the one the pipeline makes
for that step's data, in step order, whichever replica of the daemon makes it and
however long its fits take. So a due refit is awaited before the step's decision (the
last plan stays served meanwhile), and steps fetched late are decided in order. Once a
day, at the target's rebuild boundary, the pipeline is rebuilt by replaying the window
that ends there (`autoscaler.planner.replay`), and a warm start makes the same replay,
so the state is a function of a bounded window of data on every replica. Fits and
replays run in an executor (a process by default), so no request handler waits for
one; they wait for a slot in a `FitQueue`, a few at a time.

Targets collect at a fixed phase after each step boundary (`collection_phase`), so a
fleet does not wake at one instant, and their CPU-bound steps take `Turns`: one per
loop iteration, with the gRPC and HTTP sockets serviced in between, so a call waits
for at most one step however many targets are due.

Failure policy (docs/reliability.md has the table):
- no data for any one signal, data older than `staleAfter`, or a failed query: the
  last decision stays served, not planned again, until the newest real sample (its own
  timestamp, not the query's) is older than `staleAfter`; then the target turns STALE
  and the gRPC layer answers UNAVAILABLE, so KEDA's fallback applies. A missing value
  is never a zero.
- a replica count that cannot be read: the step is planned from the last count observed.
- steps missed by an outage (or by a late tick) are fetched with one range query and
  folded in order before the next sample, so history has no hole; a run of empty or
  NaN answers is fetched once more when it ends, for data that arrived late.
- a fit that fails keeps the previous model (the pipeline falls back to simpler ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from types import MappingProxyType

from autoscaler.adapters.clock import Clock
from autoscaler.domain.signals import ReplicaCounts, ReplicaSource, SignalKind, StepSignals
from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.domain.spec import ScalerSpec, metric_name_for
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.engine.api import NoKubernetesAccessError, UnknownEndpointError
from autoscaler.engine.collection import read_range, read_step, read_warm_start
from autoscaler.engine.fit_queue import FitQueue
from autoscaler.engine.runtime import TargetRuntime, build_target_snapshot, has_fresh_sample
from autoscaler.engine.sources import MetricSource, ReplicaReader
from autoscaler.engine.turns import Turns
from autoscaler.planner.pipeline import fit_for
from autoscaler.planner.replay import StepColumns, rebuild_boundary, rebuilt_from_columns, window_start

log = logging.getLogger("autoscaler.engine")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    tick_seconds: float = 1.0
    max_targets: int = 10_000
    idle_target_ttl_seconds: float = 6 * 3600.0
    warm_start_retry_seconds: float = 15.0
    history_points_shown: int = 720
    publish_coalesce_seconds: float = 0.02
    """Least wall time between two publishes: a fleet's steps arrive one turn at a time,
    and each would otherwise publish on its own."""
    stale_checks_per_publish: int = 256
    """Due staleness checks handled per publish; a fleet's come due together."""
    concurrent_fits: int = 2
    """Fits handed to the executor at once; the rest wait in the `FitQueue`. One more
    than the fit workers keeps every worker busy."""


@dataclass(slots=True)
class EngineHooks:
    """Optional observers, so telemetry plugs in without the engine importing it."""

    on_fit: Callable[[str, float], None] | None = None
    on_update: Callable[[float], None] | None = None
    on_source_error: Callable[[str, str], None] | None = None


class Engine:
    def __init__(
        self,
        *,
        sources: Mapping[str, MetricSource],
        replicas: ReplicaReader | None = None,
        clock: Clock,
        fit_executor: Executor | None,
        settings: EngineSettings | None = None,
        hooks: EngineHooks | None = None,
    ) -> None:
        self._sources = dict(sources)
        self._replicas = replicas
        """Reads the scale targets' replicas from the Kubernetes API; None without API access."""
        self._clock = clock
        self._fit_executor = fit_executor
        self._settings = settings or EngineSettings()
        self._hooks = hooks or EngineHooks()
        self._targets: dict[TargetKey, TargetRuntime] = {}
        self._tasks: dict[TargetKey, asyncio.Task[None]] = {}
        self._snapshot = EngineSnapshot(generated_at=clock.now(), generation=0)
        self._published = asyncio.Event()
        self._wake_publisher = asyncio.Event()
        self._publisher: asyncio.Task[None] | None = None
        self._turns = Turns()
        self._fits = FitQueue(self._settings.concurrent_fits)
        self._fit_slots: dict[TargetKey, asyncio.Future[None]] = {}
        """Targets waiting for a fit slot, each resolved when the FitQueue starts it."""
        self._published_targets: dict[TargetKey, TargetSnapshot] = {}
        """The dict behind the published snapshot's read-only `targets`; never mutated once published."""
        self._changed: set[TargetKey] = set()
        """Targets whose published snapshot must be rebuilt, or dropped once evicted."""
        self._stale_at: list[tuple[float, int, TargetKey]] = []
        """Heap of when READY targets turn STALE if no newer sample comes (time, entry, key)."""
        self._pushed = itertools.count()
        self._stopping = False

    # ---- EngineView -------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        return self._snapshot

    def ensure_target(self, key: TargetKey, spec: ScalerSpec) -> None:
        runtime = self._targets.get(key)
        if runtime is not None:
            runtime.last_contact = self._clock.now()
            return
        if spec.prometheus not in self._sources:
            raise UnknownEndpointError(spec.prometheus, sorted(self._sources))
        if spec.replica_source is ReplicaSource.KUBERNETES and self._replicas is None:
            raise NoKubernetesAccessError()
        if len(self._targets) >= self._settings.max_targets:
            raise OverflowError(f"the daemon already tracks {self._settings.max_targets} targets")
        runtime = TargetRuntime.create(key=key, spec=spec, metric_name=metric_name_for(key, spec))
        runtime.last_contact = self._clock.now()
        self._targets[key] = runtime
        log.info("target registered", extra={"target": str(key), "query": spec.query})
        if self._publisher is not None:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run_target(runtime))
        self._mark_dirty(runtime)

    async def wait_for_target(self, key: TargetKey, timeout: float) -> TargetSnapshot | None:
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self._snapshot.get(key)
            if snapshot is not None and snapshot.status is not TargetStatus.WARMING:
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return snapshot
            await self.wait_next(self._snapshot.generation, remaining)

    async def wait_next(self, generation: int, timeout: float) -> EngineSnapshot:
        if self._snapshot.generation > generation:
            return self._snapshot
        await wait_until_set(self._published, timeout)
        return self._snapshot

    # ---- lifecycle ----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._publisher is not None and not self._stopping and self._snapshot.generation > 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._publisher = loop.create_task(self._publish_loop())
        for key, runtime in self._targets.items():
            self._tasks[key] = loop.create_task(self._run_target(runtime))
        self._publish()

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._tasks.values(), *([self._publisher] if self._publisher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._publisher = None
        for source in self._sources.values():
            with contextlib.suppress(Exception):
                await source.close()

    # ---- per-target work ------------------------------------------------------------
    async def _run_target(self, runtime: TargetRuntime) -> None:
        source = self._sources[runtime.spec.prometheus]
        while not runtime.warm:
            await self._warm_start(runtime, source)
            if not runtime.warm:
                await self._clock.sleep(self._settings.warm_start_retry_seconds)
        step = runtime.spec.step_seconds
        phase = collection_phase(runtime.key, step)
        while True:
            now = self._clock.now()
            next_step = (math.floor((now - phase) / step) + 1) * step
            await self._clock.sleep(next_step + phase - now)
            await self._collect(runtime, source, next_step)
            if self._clock.now() - runtime.last_contact > self._settings.idle_target_ttl_seconds:
                self._evict(runtime)
                return

    async def _warm_start(self, runtime: TargetRuntime, source: MetricSource) -> None:
        spec = runtime.spec
        # The window is read once a fit slot is free, not up front: a fleet that waits
        # hours for its replays then holds (and asks Prometheus for) a few windows at a
        # time, not all of them (at 5,000 targets, 8.7 million step objects, which every
        # full garbage collection walked).
        async with self._fit_slot(runtime.key, blocking=False):
            now = self._clock.now()
            # On the step grid, so each point lands in its own slot and the next collection
            # knows exactly which steps are still missing.
            end = math.floor(now / spec.step_seconds) * spec.step_seconds
            boundary = rebuild_boundary(spec, refit_phase_steps=runtime.pipeline.refit_phase_steps, at=end)
            try:
                history = await read_warm_start(
                    source,
                    spec,
                    runtime.key,
                    replicas=self._replicas,
                    start=window_start(spec, boundary),
                    end=end,
                    at=now,
                )
            except Exception as error:  # an adapter error of any kind: record, retry later
                self._record_source_error(runtime, "warm-start", error)
                return
            steps = StepColumns.of(with_replicas_now(history.steps, at=end, replicas=history.replicas))
            newest_at = history.newest_sample_at
            del history  # its step objects go now, not after the replay
            if not await self._replay(runtime, steps, boundary=boundary, phase="warm-start replay"):
                return
        if len(steps):
            # A range answer carries old values forward too: its last point is no fresher
            # than the newest raw sample.
            last = steps.last_timestamp
            runtime.last_sample_at = last if newest_at is None else min(last, newest_at)
        runtime.collected_until = end
        runtime.warm = True
        log.info(
            "warm start replayed",
            extra={
                "target": str(runtime.key),
                "points": len(steps),
                "seconds": round(runtime.last_fit_seconds or 0, 3),
            },
        )
        self._publish_replayed(runtime, steps)

    async def _rebuild(
        self, runtime: TargetRuntime, live: StepSignals, *, boundary: float, sample_at: float | None
    ) -> bool:
        """Replace the pipeline by the replay of the window that ends at the new `boundary`
        and of the steps since, through `live` (this step, decided). False when the
        window could not be read: the step then takes the usual transition."""
        spec = runtime.spec
        async with self._fit_slot(runtime.key, blocking=True):
            try:
                earlier = await read_range(
                    self._sources[spec.prometheus], spec, start=window_start(spec, boundary), end=live.timestamp
                )
            except Exception as error:
                self._record_source_error(runtime, "rebuild", error)
                return False
            steps = StepColumns.of([step for step in earlier if step.timestamp < live.timestamp] + [live])
            del earlier  # its step objects go now, not after the replay
            if not await self._replay(runtime, steps, boundary=boundary, phase="rebuild"):
                return False
        runtime.last_sample_at = live.timestamp if sample_at is None else sample_at
        self._publish_replayed(runtime, steps)
        return True

    async def _replay(self, runtime: TargetRuntime, steps: StepColumns, *, boundary: float, phase: str) -> bool:
        """Replay `steps` into a fresh pipeline in a fit worker and swap it in; call holding a fit slot."""
        started = time.perf_counter()
        try:
            pipeline = await asyncio.get_running_loop().run_in_executor(
                self._fit_executor,
                functools.partial(
                    rebuilt_from_columns,
                    runtime.spec,
                    steps,
                    refit_phase_steps=runtime.pipeline.refit_phase_steps,
                    boundary=boundary,
                ),
            )
        except Exception as error:  # the executor failing; the replay itself falls back per fit
            self._record_source_error(runtime, phase, error)
            return False
        runtime.pipeline = pipeline
        runtime.rebuilt_boundary = boundary
        runtime.last_fit_seconds = time.perf_counter() - started
        if self._hooks.on_fit and pipeline.chosen_model is not None:
            self._hooks.on_fit(pipeline.chosen_model, runtime.last_fit_seconds)
        return True

    def _publish_replayed(self, runtime: TargetRuntime, steps: StepColumns) -> None:
        decision = runtime.pipeline.decision
        if decision is not None and runtime.last_sample_at is not None and len(steps):
            self._publish_decision(runtime, steps.last_timestamp, decision, runtime.decision)
        else:
            self._mark_dirty(runtime)

    async def _collect(self, runtime: TargetRuntime, source: MetricSource, now: float) -> None:
        spec = runtime.spec
        try:
            reading = await read_step(source, spec, runtime.key, replicas=self._replicas, at=now)
        except Exception as error:
            self._record_source_error(runtime, "query", error)
            return  # the last plan stays: a failed answer is no reason to plan again
        step = spec.step_seconds
        # The newest raw sample's own time, not the query's: Prometheus answers with an
        # old value for its lookback, and a series without staleness markers for longer.
        newest_at = reading.newest_sample_at
        sample_at = now if newest_at is None else min(now, newest_at)
        has_value = not reading.missing and now - sample_at <= spec.stale_after_seconds
        since = first_step_to_refetch(
            now=now,
            step_seconds=step,
            collected_until=runtime.collected_until,
            missing_since=runtime.missing_since,
            has_value=has_value,
        )
        if since is not None:
            # Before the new sample, so history has no hole and the model sees each step in order.
            until = math.floor(now / step) * step
            oldest_kept = until - spec.history_window_seconds
            fetched = await self._backfill(runtime, source, since=max(since, oldest_kept), until=until)
            if fetched and has_value:
                runtime.missing_since = None
        if not has_value and runtime.missing_since is None:
            runtime.missing_since = now
        runtime.collected_until = now
        if not has_value:
            # Missing data is never a low value, and a plan is not recomputed from old
            # data: the last plan stays served until the newest sample is staleAfter old.
            async with self._turns.turn():
                runtime.last_error = missing_data_reason(reading.missing, age=now - sample_at, at=now)
                if not reading.missing:  # old values: the data is as old as its newest sample
                    runtime.last_sample_at = sample_at
                self._mark_dirty(runtime)
            return
        runtime.last_error = reading.replica_error
        await self._advance(runtime, reading.signals, sample_at=sample_at)

    async def _backfill(self, runtime: TargetRuntime, source: MetricSource, *, since: float, until: float) -> bool:
        """Fold the steps in [since, until) in from range queries, each decided in order as
        if it had come on time; False when a query failed."""
        try:
            steps = await read_range(source, runtime.spec, start=since, end=until)
        except Exception as error:
            self._record_source_error(runtime, "backfill", error)
            return False
        filled = [step for step in steps if step.timestamp < until]
        for step in filled:
            await self._advance(runtime, step)
        log.info("backfilled missed steps", extra={"target": str(runtime.key), "points": len(filled), "since": since})
        return True

    async def _advance(self, runtime: TargetRuntime, signals: StepSignals, *, sample_at: float | None = None) -> None:
        """One step's transition, the one `autoscaler.planner.replay` makes: observe, refit
        when due (awaited, so the refit serves this step's decision on every replica), decide.

        `sample_at`: when the newest raw sample behind a live step was taken.
        """
        boundary = rebuild_boundary(
            runtime.spec, refit_phase_steps=runtime.pipeline.refit_phase_steps, at=signals.timestamp
        )
        rebuilt = runtime.rebuilt_boundary
        if (
            rebuilt is not None
            and boundary > rebuilt
            and await self._rebuild(runtime, signals, boundary=boundary, sample_at=sample_at)
        ):
            return
        async with self._turns.turn():
            started = time.perf_counter()
            runtime.observe(signals)
            if sample_at is not None:
                runtime.last_sample_at = sample_at
            runtime.last_update_seconds = time.perf_counter() - started
            if self._hooks.on_update:
                self._hooks.on_update(runtime.last_update_seconds)
        if runtime.pipeline.refit_due():
            await self._refit(runtime)
        if runtime.decided_at is not None and signals.timestamp <= runtime.decided_at:
            return  # a step inside the window that came late: the next refit sees it
        async with self._turns.turn():
            self._decide(runtime, signals.timestamp, signals.replicas)

    @contextlib.asynccontextmanager
    async def _fit_slot(self, key: TargetKey, *, blocking: bool) -> AsyncIterator[None]:
        """Wait for one of the FitQueue's slots, hold it for the block, then pass it on."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fit_slots[key] = granted
        self._fits.request(key, blocking=blocking)
        self._start_fits()
        try:
            await granted
            yield
        finally:
            if self._fit_slots.get(key) is granted:
                del self._fit_slots[key]
            if granted.done() and not granted.cancelled():
                self._fits.finished(key)
            else:
                self._fits.discard(key)
            if not self._stopping:
                self._start_fits()

    def _start_fits(self) -> None:
        while (key := self._fits.start_next()) is not None:
            granted = self._fit_slots.get(key)
            if granted is None or granted.done():  # its step was cancelled (evicted, stopping)
                self._fits.finished(key)
                continue
            granted.set_result(None)

    async def _refit(self, runtime: TargetRuntime) -> None:
        async with self._fit_slot(runtime.key, blocking=True):
            # Read inside the slot; the target's own task waits here, so no newer step
            # comes in between and the fit sees exactly this step's data.
            inputs = runtime.pipeline.refit_inputs()
            started = time.perf_counter()
            try:
                loop = asyncio.get_running_loop()
                fitted = await loop.run_in_executor(self._fit_executor, fit_for, inputs)
            except Exception as error:  # fit_for falls back internally; this is the executor failing
                runtime.last_error = f"model refit failed: {error}"
                log.warning("refit failed", extra={"target": str(runtime.key), "error": str(error)})
                self._mark_dirty(runtime)
                return
        runtime.pipeline.install(fitted)
        runtime.last_fit_seconds = time.perf_counter() - started
        if self._hooks.on_fit:
            self._hooks.on_fit(runtime.pipeline.chosen_model or "none", runtime.last_fit_seconds)
        self._mark_dirty(runtime)

    def _decide(self, runtime: TargetRuntime, now: float, replicas: ReplicaCounts | None) -> None:
        """Plan from the replicas observed at this step, never from our own last plan: the
        HPA may not have followed it (tolerance, maxReplicas, another trigger, a fallback)."""
        if runtime.last_sample_at is None:
            return  # nothing observed yet: no decision, so handlers answer UNAVAILABLE
        previous = runtime.decision
        self._publish_decision(runtime, now, runtime.pipeline.decide(now, observed_replicas=replicas), previous)

    def _publish_decision(
        self, runtime: TargetRuntime, now: float, decision: Decision, previous: Decision | None
    ) -> None:
        runtime.decision = decision
        runtime.decided_at = now
        if previous is None or (previous.replicas, previous.buffer_replicas) != (
            decision.replicas,
            decision.buffer_replicas,
        ):
            log.info(
                "plan changed",
                extra={
                    "target": str(runtime.key),
                    "replicas": decision.replicas,
                    "reactive": decision.reactive_replicas,
                    "buffer": decision.buffer_replicas,
                    "from_replicas": previous.replicas if previous else None,
                    "reason": decision.reason,
                },
            )
        self._mark_dirty(runtime)

    def _record_source_error(self, runtime: TargetRuntime, phase: str, error: Exception) -> None:
        runtime.source_errors += 1
        runtime.last_error = f"{phase}: {type(error).__name__}: {error}"
        log.warning(
            "metric source error",
            extra={"target": str(runtime.key), "phase": phase, "error": runtime.last_error},
        )
        if self._hooks.on_source_error:
            self._hooks.on_source_error(runtime.spec.prometheus, type(error).__name__)
        self._mark_dirty(runtime)  # publish the cause: KEDA's UNAVAILABLE message and /api show it

    def _evict(self, runtime: TargetRuntime) -> None:
        log.info("target evicted after idle TTL", extra={"target": str(runtime.key)})
        self._targets.pop(runtime.key, None)
        self._tasks.pop(runtime.key, None)
        self._fits.discard(runtime.key)
        self._changed.add(runtime.key)
        self._wake_publisher.set()

    # ---- publishing -------------------------------------------------------------------
    def _mark_dirty(self, runtime: TargetRuntime) -> None:
        """Build the target's view now, in the turn that changed it, for the next publish.

        A fleet's steps arrive within a fraction of a step; building their views at
        publish time made each publish a pause of milliseconds that GetMetrics calls
        queued behind, while a turn is short and the sockets are serviced between turns.
        """
        runtime.view = build_target_snapshot(
            runtime, now=self._clock.now(), reuse=None, shown=self._settings.history_points_shown
        )
        self._changed.add(runtime.key)
        self._wake_publisher.set()

    async def _publish_loop(self) -> None:
        while True:
            await wait_until_set(self._wake_publisher, self._settings.tick_seconds)
            self._wake_publisher.clear()
            try:
                self._publish()
            except Exception:  # a bug here must not stop publishing for good: every answer would age out
                log.exception("publishing the engine snapshot failed")
            await asyncio.sleep(self._settings.publish_coalesce_seconds)

    def _publish(self) -> None:
        """Swap in a new snapshot: the views of the targets that changed replace theirs,
        and those whose newest sample has aged past staleAfter turn STALE; the rest are
        carried over. The views were built when their targets changed, so this only
        re-derives statuses."""
        now = self._clock.now()
        changed, self._changed = self._changed, set()
        changed |= self._due_stale_checks(now)
        targets: Mapping[TargetKey, TargetSnapshot] = self._snapshot.targets
        if changed:
            # dict.copy, not dict(proxy): the copy keeps the stored hashes, where building
            # a dict from the read-only proxy hashed every key again (TargetKey's hash is
            # Python code): most of the loop's time with 5,000 targets.
            rebuilt = self._published_targets.copy()
            for key in changed:
                runtime = self._targets.get(key)
                if runtime is None:
                    rebuilt.pop(key, None)
                    continue
                snapshot = build_target_snapshot(
                    runtime, now=now, reuse=runtime.view, shown=self._settings.history_points_shown
                )
                runtime.view = snapshot
                rebuilt[key] = snapshot
                sample_at = runtime.last_sample_at
                if snapshot.status is TargetStatus.READY and sample_at is not None and runtime.stale_entry is None:
                    self._push_stale_check(runtime, sample_at)
            self._published_targets = rebuilt
            targets = MappingProxyType(rebuilt)
        self._snapshot = EngineSnapshot(
            generated_at=now,
            generation=self._snapshot.generation + 1,
            targets=targets,
            fits_waiting=len(self._fits),
            fits_running=self._fits.running,
        )
        published, self._published = self._published, asyncio.Event()
        published.set()

    def _due_stale_checks(self, now: float) -> set[TargetKey]:
        """The targets whose newest sample aged past staleAfter, to publish STALE.

        Samples carry their step's timestamp, so a whole fleet comes due at one instant:
        a few hundred are checked per publish and the rest at the next one, 20 ms on,
        rather than all in one pause of the event loop. A target with a newer sample
        only moves its check.
        """
        stale: set[TargetKey] = set()
        for _ in range(self._settings.stale_checks_per_publish):
            if not self._stale_at or self._stale_at[0][0] > now:
                return stale
            _, entry, key = heapq.heappop(self._stale_at)
            runtime = self._targets.get(key)
            if runtime is None or runtime.stale_entry != entry:  # evicted since
                continue
            runtime.stale_entry = None
            if has_fresh_sample(runtime, now) and runtime.last_sample_at is not None:
                self._push_stale_check(runtime, runtime.last_sample_at)
            else:
                stale.add(key)
        if self._stale_at and self._stale_at[0][0] <= now:
            self._wake_publisher.set()
        return stale

    def _push_stale_check(self, runtime: TargetRuntime, sample_at: float) -> None:
        """One heap entry per READY target, at the instant its newest sample ages past
        staleAfter; a newer sample moves it only when it comes due."""
        stale_at = math.nextafter(sample_at + runtime.spec.stale_after_seconds, math.inf)
        runtime.stale_entry = next(self._pushed)
        heapq.heappush(self._stale_at, (stale_at, runtime.stale_entry, runtime.key))


async def wait_until_set(event: asyncio.Event, timeout: float) -> None:
    """Wait for `event`, at most `timeout` seconds.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the
    event is set (CPython gh-86296), and `stop()` would wait forever for a loop that
    carries on. `asyncio.timeout` tells its own expiry from a cancellation.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


def collection_phase(key: TargetKey, step_seconds: float) -> float:
    """Seconds after each step boundary at which this target collects (the step's own sample).

    Spread over the first fifth of the step (at most 10 s), so thousands of targets do
    not all wake at one instant; fixed per target, so its collections stay a step apart.
    """
    spread = min(0.2 * step_seconds, 10.0)
    return zlib.crc32(str(key).encode()) / 2**32 * spread


def first_step_to_refetch(
    *, now: float, step_seconds: float, collected_until: float | None, missing_since: float | None, has_value: bool
) -> float | None:
    """The first step before `now` to fetch again with a range query, or None.

    Steps never asked for (an outage, or a collection that ran late) are fetched at once.
    A run of empty or NaN answers is fetched once more when it ends: data that arrived
    late (remote write, federation, a slow recording rule) is there by then.
    """
    starts = []
    if collected_until is not None and math.floor(now / step_seconds) - math.floor(collected_until / step_seconds) > 1:
        starts.append((math.floor(collected_until / step_seconds) + 1) * step_seconds)
    if has_value and missing_since is not None:
        starts.append(missing_since)
    return min(starts, default=None)


def missing_data_reason(missing: tuple[SignalKind, ...], *, age: float, at: float) -> str:
    """Why a step's answers were not used, for the target's last_error."""
    if missing:
        return f"no data for {', '.join(missing)} at {at:.0f}; the last plan is held"
    return f"the newest sample behind the queries is {age:.0f}s old at {at:.0f}; the last plan is held"


def with_replicas_now(steps: list[StepSignals], *, at: float, replicas: ReplicaCounts | None) -> list[StepSignals]:
    """The warm-start steps, the one at `at` with the replica counts read now if the range
    gave it none (the Kubernetes API keeps no history): what a live step there would see."""
    if replicas is None or not steps or steps[-1].timestamp != at or steps[-1].replicas is not None:
        return steps
    return [*steps[:-1], dataclasses.replace(steps[-1], replicas=replicas)]
