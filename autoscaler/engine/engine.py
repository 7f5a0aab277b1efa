"""The only orchestrator: collect -> store -> forecast -> plan -> publish.

Each registered target runs one asyncio task on the engine's clock. A step of that
task reads every signal of the target, the age of their data and the scale target's
replica counts at once (`collection`), folds them into the target's `TargetPipeline`
(O(1)), plans from the replicas observed, and marks the target dirty; a publisher task swaps in a new immutable
`EngineSnapshot` once per tick. Model refits run in an executor (a process by
default), so no request handler and no collection step ever waits for a fit; due
refits wait in a `FitQueue`, a few at a time in the executor.

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
import heapq
import itertools
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from types import MappingProxyType

from autoscaler.adapters.clock import Clock
from autoscaler.domain.signals import ReplicaCounts, ReplicaSource, SignalKind, StepSignals
from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.domain.spec import ScalerSpec, metric_name_for
from autoscaler.domain.types import TargetKey
from autoscaler.engine.api import NoKubernetesAccessError, UnknownEndpointError
from autoscaler.engine.collection import read_range, read_step, read_warm_start
from autoscaler.engine.fit_queue import FitQueue
from autoscaler.engine.runtime import TargetRuntime, build_target_snapshot, has_fresh_sample
from autoscaler.engine.sources import MetricSource, ReplicaReader
from autoscaler.engine.turns import Turns
from autoscaler.planner.pipeline import fit_for

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
        now = self._clock.now()
        step = spec.step_seconds
        # On the step grid, so each point lands in its own slot and the next collection
        # knows exactly which steps are still missing.
        end = math.floor(now / step) * step
        try:
            history = await read_warm_start(
                source,
                spec,
                runtime.key,
                replicas=self._replicas,
                start=end - spec.history_window_seconds + step,
                end=end,
                at=now,
            )
        except Exception as error:  # an adapter error of any kind: record, retry later
            self._record_source_error(runtime, "warm-start", error)
            return
        async with self._turns.turn():
            _observe_all(runtime, history.steps)
            newest_at = history.newest_sample_at
            if newest_at is not None and runtime.last_sample_at is not None:
                # A range answer carries old values forward too: its last point is no fresher
                # than the newest raw sample.
                runtime.last_sample_at = min(runtime.last_sample_at, newest_at)
        runtime.collected_until = end
        runtime.warm = True
        log.info(
            "warm start",
            extra={"target": str(runtime.key), "points": len(history.steps), "window_s": spec.history_window_seconds},
        )
        # Answer at once (reactive until a model is fitted); the first fit runs in the background.
        self._decide(runtime, now, history.replicas)
        self._schedule_refit(runtime, now)

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
        async with self._turns.turn():
            if not has_value:
                # Missing data is never a low value, and a plan is not recomputed from old
                # data: the last plan stays served until the newest sample is staleAfter old.
                runtime.last_error = missing_data_reason(reading.missing, age=now - sample_at, at=now)
                if not reading.missing:  # old values: the data is as old as its newest sample
                    runtime.last_sample_at = sample_at
                self._mark_dirty(runtime)
                return
            started = time.perf_counter()
            runtime.observe(reading.signals)
            runtime.last_sample_at = sample_at
            runtime.last_update_seconds = time.perf_counter() - started
            if self._hooks.on_update:
                self._hooks.on_update(runtime.last_update_seconds)
            runtime.last_error = reading.replica_error
            self._schedule_refit(runtime, now)
            self._decide(runtime, now, reading.signals.replicas)

    async def _backfill(self, runtime: TargetRuntime, source: MetricSource, *, since: float, until: float) -> bool:
        """Fold the steps in [since, until) in from range queries; False when one failed."""
        try:
            steps = await read_range(source, runtime.spec, start=since, end=until)
        except Exception as error:
            self._record_source_error(runtime, "backfill", error)
            return False
        async with self._turns.turn():
            filled = _observe_all(runtime, [step for step in steps if step.timestamp < until])
        log.info("backfilled missed steps", extra={"target": str(runtime.key), "points": filled, "since": since})
        return True

    def _schedule_refit(self, runtime: TargetRuntime, now: float) -> None:
        """Queue a refit when one is due and none waits or runs."""
        pipeline = runtime.pipeline
        if pipeline.history_points > 0 and not self._fits.is_pending(runtime.key) and pipeline.refit_due(now):
            self._fits.request(runtime.key, has_model=pipeline.chosen_model is not None)
            self._start_fits()

    def _start_fits(self) -> None:
        while (key := self._fits.start_next()) is not None:
            runtime = self._targets.get(key)
            if runtime is None:  # evicted while it waited
                self._fits.finished(key)
                continue
            runtime.fit_task = asyncio.get_running_loop().create_task(self._refit(runtime))

    async def _refit(self, runtime: TargetRuntime) -> None:
        try:
            await self._fit_and_install(runtime)
        finally:
            runtime.fit_task = None
            self._fits.finished(runtime.key)
            if not self._stopping:
                self._start_fits()

    async def _fit_and_install(self, runtime: TargetRuntime) -> None:
        inputs = runtime.pipeline.refit_inputs()  # read now, so a fit that waited sees the newest data
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
        runtime.decision = runtime.pipeline.decide(now, observed_replicas=replicas)
        runtime.decided_at = now
        changed = previous is None or (previous.replicas, previous.buffer_replicas) != (
            runtime.decision.replicas,
            runtime.decision.buffer_replicas,
        )
        if changed:
            log.info(
                "plan changed",
                extra={
                    "target": str(runtime.key),
                    "replicas": runtime.decision.replicas,
                    "reactive": runtime.decision.reactive_replicas,
                    "buffer": runtime.decision.buffer_replicas,
                    "from_replicas": previous.replicas if previous else None,
                    "reason": runtime.decision.reason,
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


def _observe_all(runtime: TargetRuntime, steps: list[StepSignals]) -> int:
    """Fold range-read steps into the pipeline; steps inside the window fill gaps."""
    for step in steps:
        runtime.observe(step)
    return len(steps)
