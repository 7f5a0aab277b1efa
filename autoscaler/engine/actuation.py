"""The actuation loop: the engine's latest plans become placeholder buffers.

It reads published snapshots only (never the planner), groups targets by the
Deployment their placeholders copy, and applies the buffer the group's triggers need
together (`autoscaler.engine.buffers`). It writes only when this replica leads and the group has a target in active
mode; otherwise it records what it would have written, so shadow mode and standby
replicas can be inspected. Failures are reported, logged and retried on the next
pass; nothing here raises into the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from kubernetes import client
from kubernetes.client import ApiClient

from autoscaler.adapters.clock import Clock, SystemClock
from autoscaler.adapters.kube import (
    ActuatorSettings,
    ApplyOutcome,
    KubeActuator,
    KubeActuatorError,
    LeadershipLostError,
    Mode,
)
from autoscaler.adapters.leader import LeaderElector, LeaseSettings
from autoscaler.domain.limits import share_buffer_total
from autoscaler.domain.placeholders import PlaceholderGroup
from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.engine.api import EngineView
from autoscaler.engine.buffers import combined_buffer, trigger_need
from autoscaler.settings import LeaderElectionSettings, Settings

log = logging.getLogger(__name__)

ResultCallback = Callable[[TargetKey, str, str | None], None]
"""(target, result, error). Results: unchanged, created, updated, throttled (a write
is due but the rate limit said wait), shadow, not_leader, skipped, error."""


class BufferActuator(Protocol):
    def apply_buffer(
        self, group: PlaceholderGroup, replicas: int, *, may_write: Callable[[], bool]
    ) -> ApplyOutcome: ...


class Leadership(Protocol):
    def is_leader(self) -> bool: ...


class _SoleReplica:
    """Leadership for a daemon run without election (one replica)."""

    def is_leader(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class BufferIntent:
    """The buffer one group should hold after a pass, and whether it was written."""

    group: PlaceholderGroup
    replicas: int
    targets: tuple[TargetKey, ...]
    reason: str
    result: str
    error: str | None
    at: float

    @property
    def written(self) -> bool:
        return self.result in ("created", "updated")


@dataclass(frozen=True, slots=True)
class _Wanted:
    group: PlaceholderGroup
    replicas: int
    active: tuple[TargetKey, ...]
    shadow: tuple[TargetKey, ...]
    reason: str


def buffer_input(target: TargetSnapshot) -> tuple[PlaceholderGroup, Decision] | str:
    """The group and decision a target contributes, or why it contributes nothing."""
    workload, decision = target.spec.workload_name, target.decision
    if workload is None:
        return "no workloadName: nothing to copy placeholders from"
    if target.spec.max_buffer_replicas == 0:
        return "maxBufferReplicas is 0: node buffer disabled"
    if decision is None or not target.servable:
        return f"no current decision (status {target.status.value}): buffer left as it is"
    return PlaceholderGroup(target.key.namespace, workload), decision


def wanted_buffers(snapshot: EngineSnapshot) -> tuple[dict[PlaceholderGroup, _Wanted], dict[TargetKey, str]]:
    """Per group the buffer its triggers need together (`combined_buffer`; active targets
    first), and the skipped targets."""
    members: dict[PlaceholderGroup, list[tuple[TargetSnapshot, Decision]]] = {}
    skipped: dict[TargetKey, str] = {}
    for key, target in snapshot.targets.items():
        contribution = buffer_input(target)
        if isinstance(contribution, str):
            skipped[key] = contribution
            continue
        group, decision = contribution
        members.setdefault(group, []).append((target, decision))
    wanted: dict[PlaceholderGroup, _Wanted] = {}
    for group, entries in members.items():
        active = [entry for entry in entries if not entry[0].spec.shadow]
        # Shadow targets only inform what would be written when no active target exists.
        counted = active or entries
        desired = [
            target.observed_replicas.desired
            for target, _ in counted
            if target.observed_replicas is not None and target.observed_replicas.desired is not None
        ]
        buffer = combined_buffer(
            [trigger_need(target, decision) for target, decision in counted],
            observed_desired=max(desired, default=None),
        )
        wanted[group] = _Wanted(
            group=group,
            replicas=buffer.replicas,
            active=tuple(target.key for target, _ in active),
            shadow=tuple(target.key for target, _ in entries if target.spec.shadow),
            reason=buffer.reason,
        )
    return wanted, skipped


def within_total(wanted: Mapping[PlaceholderGroup, _Wanted], total: int) -> dict[PlaceholderGroup, _Wanted]:
    """The groups that will write (an active target) cut to a fair share of `total` replicas."""
    writing = {group: want.replicas for group, want in wanted.items() if want.active}
    shares = share_buffer_total(writing, total)
    return {
        group: want
        if shares.get(group, want.replicas) == want.replicas
        else replace(
            want,
            replicas=shares[group],
            reason=f"{want.reason}; cut from {want.replicas} to a fair share of limits.maxBufferReplicasTotal {total}",
        )
        for group, want in wanted.items()
    }


class ActuationLoop:
    def __init__(
        self,
        view: EngineView,
        actuator: BufferActuator,
        *,
        leadership: Leadership | None = None,
        interval_seconds: float = 15.0,
        clock: Clock | None = None,
        on_result: ResultCallback | None = None,
        shadow: bool = False,
        max_total_replicas: int | None = None,
    ) -> None:
        """`shadow=True` puts every target in shadow mode: plans are recorded, nothing is written.

        `max_total_replicas` (the operator's limits.maxBufferReplicasTotal) caps the buffers
        of all groups with an active target together, each cut to a fair share.
        """
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._shadow = shadow
        self._max_total = max_total_replicas
        self._view = view
        self._actuator = actuator
        self._leadership = leadership or _SoleReplica()
        self._interval = interval_seconds
        self._clock = clock or SystemClock()
        self._on_result = on_result
        self._intents: dict[PlaceholderGroup, BufferIntent] = {}
        self._written_groups: set[PlaceholderGroup] = set()
        self._skips: dict[TargetKey, str] = {}
        self._wake = asyncio.Event()
        self._running_loop: asyncio.AbstractEventLoop | None = None

    def intents(self) -> Mapping[PlaceholderGroup, BufferIntent]:
        """The latest intent per group: what was written, or would have been."""
        return MappingProxyType(dict(self._intents))

    def wake(self) -> None:
        """Start the next pass now (e.g. on becoming leader); safe from any thread."""
        if self._running_loop is not None:
            self._running_loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._running_loop = asyncio.get_running_loop()
        generation = -1
        while not stop.is_set():
            snapshot = self._view.snapshot()
            generation = snapshot.generation
            try:
                await self.reconcile(snapshot)
            except Exception:  # a bug here must not stop the daemon; the next pass retries
                log.exception("actuation_pass_failed generation=%d", generation)
            await self._wait(stop, generation)

    async def reconcile(self, snapshot: EngineSnapshot) -> dict[PlaceholderGroup, BufferIntent]:
        """One pass over `snapshot`; returns this pass's intents."""
        wanted, skipped = wanted_buffers(snapshot)
        if self._max_total is not None:
            wanted = within_total(wanted, self._max_total)
        self._log_skips(skipped)
        for key in skipped:
            self._report(key, "skipped", None)
        # Groups we wrote earlier whose targets went away or were disabled: release their GPUs.
        for group in sorted(self._written_groups - set(wanted), key=str):
            wanted[group] = _Wanted(group, 0, (), (), "no target plans a buffer for this workload any more")
        done: dict[PlaceholderGroup, BufferIntent] = {}
        for group, want in wanted.items():
            intent = await self._apply(want)
            self._log_change(intent)
            self._intents[group] = intent
            done[group] = intent
            for key in want.active:
                self._report(key, intent.result, intent.error)  # "shadow" too when the daemon is in shadow
            for key in want.shadow:
                self._report(key, "shadow", None)
        for group in set(self._intents) - set(wanted):
            del self._intents[group]
        return done

    # -- internals

    async def _apply(self, want: _Wanted) -> BufferIntent:
        def intent(result: str, error: str | None = None) -> BufferIntent:
            return BufferIntent(
                group=want.group,
                replicas=want.replicas,
                targets=(*want.active, *want.shadow),
                reason=want.reason,
                result=result,
                error=error,
                at=self._clock.now(),
            )

        is_orphan = not want.active and not want.shadow
        if self._shadow or (not want.active and not is_orphan):
            return intent("shadow")
        if not self._leadership.is_leader():
            return intent("not_leader")
        try:
            outcome = await asyncio.to_thread(
                self._actuator.apply_buffer, want.group, want.replicas, may_write=self._leadership.is_leader
            )
        except LeadershipLostError:
            return intent("not_leader")
        except KubeActuatorError as exc:
            log.warning("buffer_apply_failed group=%s replicas=%d error=%s", want.group, want.replicas, exc)
            return intent("error", str(exc))
        if outcome.action in ("created", "updated", "unchanged"):
            self._written_groups.add(want.group)
        if is_orphan and outcome.action != "throttled":
            self._written_groups.discard(want.group)
        return intent(outcome.action)

    def _report(self, key: TargetKey, result: str, error: str | None) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(key, result, error)
        except Exception:  # telemetry must never break actuation
            log.exception("on_result_failed target=%s result=%s", key, result)

    def _log_change(self, intent: BufferIntent) -> None:
        previous = self._intents.get(intent.group)
        if previous is not None and previous.replicas == intent.replicas and not intent.written:
            return
        log.info(
            "buffer_change group=%s from=%s to=%d result=%s written=%s reason=%r%s",
            intent.group,
            previous.replicas if previous is not None else "none",
            intent.replicas,
            intent.result,
            intent.written,
            intent.reason,
            f" error={intent.error!r}" if intent.error else "",
        )

    def _log_skips(self, skipped: Mapping[TargetKey, str]) -> None:
        for key, reason in skipped.items():
            if self._skips.get(key) != reason:
                log.info("buffer_target_skipped target=%s reason=%r", key, reason)
        self._skips = dict(skipped)

    async def _wait(self, stop: asyncio.Event, generation: int) -> None:
        """Until a newer snapshot, a wake-up, the interval, or stop; whichever comes first."""
        waits = (
            asyncio.ensure_future(self._view.wait_next(generation, self._interval)),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        )
        try:
            await asyncio.wait(waits, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake.clear()
            for task in waits:
                task.cancel()
            for task in waits:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


# ----------------------------------------------------------------------------- wiring


class ActuationHandle:
    """The running loop (and elector); `stop()` ends both and releases the lease."""

    def __init__(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        self._stop = stop
        self._tasks = tasks

    async def stop(self) -> None:
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("actuation_task_failed error=%r", result)


_MODES: Mapping[str, Mode] = {"placeholders": "placeholders", "capacitybuffer": "capacitybuffer", "auto": "auto"}


def lease_settings(election: LeaderElectionSettings, identity: str) -> LeaseSettings:
    """client-go's proportions: renew deadline two thirds of the lease, a round every renew period."""
    duration = math.ceil(election.lease_duration_seconds)
    return LeaseSettings(
        namespace=election.namespace,
        identity=identity,
        name=election.lease_name,
        lease_duration_seconds=duration,
        renew_deadline_seconds=duration * 2 / 3,
        retry_period_seconds=election.renew_period_seconds,
    )


async def start_actuation(
    settings: Settings, view: EngineView, *, api_client: ApiClient, on_result: ResultCallback | None = None
) -> ActuationHandle:
    """Start the loop (and, when enabled, leader election) from the daemon's settings.

    The daemon builds `api_client` and closes it after `ActuationHandle.stop()`.
    """
    actuator_settings = settings.actuator
    mode = _MODES.get(actuator_settings.mode)
    if mode is None:
        raise ValueError(f"actuator.mode {actuator_settings.mode!r} does not start actuation")
    actuator = KubeActuator(
        api_client,
        ActuatorSettings(
            mode=mode,
            priority_class_name=actuator_settings.priority_class_name,
            priority_value=actuator_settings.priority_value,
            image=actuator_settings.pause_image,
        ),
    )
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    elector: LeaderElector | None = None
    if settings.leader_election.enabled:
        identity = f"{os.environ.get('POD_NAME') or platform.node()}-{uuid.uuid4().hex[:8]}"
        elector = LeaderElector(
            client.CoordinationV1Api(api_client),
            lease_settings(settings.leader_election, identity),
            on_change=lambda _leader: loop.wake(),  # a new leader writes at once, not a pass later
        )
    loop = ActuationLoop(
        view,
        actuator,
        leadership=elector,
        on_result=on_result,
        shadow=actuator_settings.shadow,
        max_total_replicas=settings.limits.max_buffer_replicas_total,
    )
    tasks.append(asyncio.create_task(loop.run(stop), name="actuation"))
    if elector is not None:
        tasks.append(asyncio.create_task(elector.run(stop), name="leader-election"))
    log.info(
        "actuation_started mode=%s shadow=%s leader_election=%s",
        mode,
        actuator_settings.shadow,
        elector.settings.identity if elector else "off",
    )
    return ActuationHandle(stop, tasks)
