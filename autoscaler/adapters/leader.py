"""Leader election on a coordination.k8s.io/v1 Lease: only the leader writes.

The rules follow client-go's: a replica may take the lease when it is free, or when
the record it observes has not changed for `leaseDurationSeconds` measured on its OWN
monotonic clock from the moment it first saw that record (wall clocks of two pods
may disagree; elapsed time on each does not drift much). Writes use the record's
resourceVersion, so two candidates can never both win one round.

Never two writers: a leader counts itself leader only until `renew_deadline` after
the start of its last successful write. A rival can take over at the earliest
`lease_duration` after it saw that write, which happened after the write started;
since `renew_deadline < lease_duration`, the old leader has stopped before the new
one starts, with `lease_duration - renew_deadline` to spare for clock-rate drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


class LeaseSettingsError(ValueError):
    """The lease timings cannot guarantee a single writer."""


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    namespace: str
    identity: str
    name: str = "predictive-autoscaler"
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise LeaseSettingsError("identity must be a non-empty, per-process unique string")
        if self.lease_duration_seconds < 1:
            raise LeaseSettingsError("lease_duration_seconds must be at least 1")
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise LeaseSettingsError(
                "need 0 < retry_period_seconds < renew_deadline_seconds < lease_duration_seconds, got "
                f"{self.retry_period_seconds} / {self.renew_deadline_seconds} / {self.lease_duration_seconds}"
            )

    @property
    def failover_bound_seconds(self) -> float:
        """Longest wait after a leader crashes until a rival leads (request latency aside).

        A rival may first see the crashed leader's last write up to one retry period
        late, waits the lease duration from then, and notices expiry at its next round.
        """
        return self.lease_duration_seconds + 2 * self.retry_period_seconds


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of a Lease the rules read."""

    holder: str | None
    lease_duration_seconds: int
    acquire_time: datetime | None
    transitions: int
    resource_version: str


@dataclass(frozen=True, slots=True)
class Observation:
    """When this replica first saw the current version of the record (monotonic seconds)."""

    resource_version: str
    since: float


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    TAKE_OVER = "take_over"  # free, or its holder stopped renewing
    WAIT = "wait"  # someone else holds a fresh lease


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """Restart the expiry timer whenever the record changed since we last looked."""
    if previous is not None and previous.resource_version == record.resource_version:
        return previous
    return Observation(record.resource_version, now)


def next_action(record: LeaseRecord | None, *, identity: str, observation: Observation | None, now: float) -> Action:
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if not record.holder:
        return Action.TAKE_OVER
    if observation is None or observation.resource_version != record.resource_version:
        return Action.WAIT
    if now - observation.since >= record.lease_duration_seconds:
        return Action.TAKE_OVER
    return Action.WAIT


def micro_time(moment: datetime) -> datetime:
    """`moment` as a Lease MicroTime can carry it.

    The client writes datetimes with `isoformat()`, which drops the fraction when it is
    zero, and the API server only parses MicroTime with six fractional digits.
    """
    return moment.replace(microsecond=max(moment.microsecond, 1))


def lease_spec(
    action: Action, record: LeaseRecord | None, *, settings: LeaseSettings, now_wall: datetime
) -> client.V1LeaseSpec:
    """The spec to write for `action` (CREATE, RENEW or TAKE_OVER)."""
    now_wall = micro_time(now_wall)
    changes_holder = record is None or record.holder != settings.identity
    transitions = 0 if record is None else record.transitions + (1 if changes_holder else 0)
    acquired = now_wall if changes_holder or record is None or record.acquire_time is None else record.acquire_time
    return client.V1LeaseSpec(
        holder_identity=settings.identity,
        lease_duration_seconds=settings.lease_duration_seconds,
        acquire_time=acquired,
        renew_time=now_wall,
        lease_transitions=transitions,
    )


def _record(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or None,
        lease_duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=spec.acquire_time,
        transitions=int(spec.lease_transitions or 0),
        resource_version=str((lease.metadata and lease.metadata.resource_version) or ""),
    )


class LeaseApi(Protocol):
    """The three calls of `client.CoordinationV1Api` the elector makes."""

    def read_namespaced_lease(self, name: str, namespace: str, *, _request_timeout: float) -> client.V1Lease: ...

    def create_namespaced_lease(
        self, namespace: str, body: client.V1Lease, *, _request_timeout: float
    ) -> client.V1Lease: ...

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, *, _request_timeout: float
    ) -> client.V1Lease: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """Holds (or waits for) one Lease. `is_leader()` is the write guard; it is cheap and thread-safe.

    `leases` is `client.CoordinationV1Api(api_client)` in the daemon.
    """

    def __init__(
        self,
        leases: LeaseApi,
        settings: LeaseSettings,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = _utcnow,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self._leases = leases
        self._monotonic = monotonic
        self._wall = wall
        self._on_change = on_change
        self._observation: Observation | None = None
        self._valid_until = -math.inf
        self._was_leader = False
        self.last_error: str | None = None

    def is_leader(self) -> bool:
        """True only while the last successful write is younger than the renew deadline."""
        return self._monotonic() < self._valid_until

    @property
    def valid_until(self) -> float:
        """Monotonic instant at which this replica stops writing unless it renews first."""
        return self._valid_until

    def try_acquire_or_renew(self) -> bool:
        """One election round: create, renew, take over or wait. Never raises on API errors."""
        started = self._monotonic()
        try:
            self._round(started)
            self.last_error = None
        except ApiException as exc:
            if exc.status == 409:
                # Someone else wrote the record since we read it: we did not win this round.
                self._valid_until = -math.inf
            self.last_error = f"HTTP {exc.status} {exc.reason}"
            log.warning("lease_round_failed lease=%s identity=%s error=%r", self._where, self.settings.identity, exc)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self.last_error = repr(exc)
            log.warning("lease_round_failed lease=%s identity=%s error=%r", self._where, self.settings.identity, exc)
        self._report()
        return self.is_leader()

    def release(self) -> bool:
        """Give the lease up so a rival takes over at once; True when it was ours to release."""
        self._valid_until = -math.inf  # stop writing before the lease is visibly free
        self._report()
        try:
            lease = self._leases.read_namespaced_lease(
                self.settings.name, self.settings.namespace, _request_timeout=self._timeout
            )
            record = _record(lease)
            if record.holder != self.settings.identity:
                return False
            now = micro_time(self._wall())
            lease.spec = client.V1LeaseSpec(
                holder_identity=None,
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                lease_transitions=record.transitions,
            )
            self._leases.replace_namespaced_lease(
                self.settings.name, self.settings.namespace, lease, _request_timeout=self._timeout
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # The lease then simply expires: failover takes the full bound instead of one retry.
            log.warning("lease_release_failed lease=%s error=%r", self._where, exc)
            return False
        log.info("lease_released lease=%s identity=%s", self._where, self.settings.identity)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Take part in the election until `stop` is set, then release the lease if held."""
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.try_acquire_or_renew)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.retry_period_seconds)
        finally:
            await asyncio.to_thread(self.release)

    # -- internals

    @property
    def _where(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}"

    @property
    def _timeout(self) -> float:
        # A round must finish well inside the renew deadline to be of any use.
        return self.settings.retry_period_seconds

    def _round(self, started: float) -> None:
        settings = self.settings
        try:
            lease: client.V1Lease | None = self._leases.read_namespaced_lease(
                settings.name, settings.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            lease = None
        record = _record(lease) if lease is not None else None
        # Expiry counts from when the read returned, which is after the holder's write
        # started: the rival's wait can only be longer than the holder's validity.
        observed_at = self._monotonic()
        if record is not None:
            self._observation = observe(self._observation, record, observed_at)
        action = next_action(record, identity=settings.identity, observation=self._observation, now=observed_at)
        if action is Action.WAIT:
            self._valid_until = -math.inf
            return
        spec = lease_spec(action, record, settings=settings, now_wall=self._wall())
        if lease is None:
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=settings.name, namespace=settings.namespace), spec=spec
            )
            self._leases.create_namespaced_lease(settings.namespace, body, _request_timeout=self._timeout)
        else:
            lease.spec = spec  # metadata keeps the resourceVersion we read: a rival's write makes this 409
            self._leases.replace_namespaced_lease(
                settings.name, settings.namespace, lease, _request_timeout=self._timeout
            )
        self._valid_until = started + settings.renew_deadline_seconds
        if action is Action.TAKE_OVER and record is not None:
            log.info(
                "lease_taken_over lease=%s identity=%s previous=%s transitions=%d",
                self._where, settings.identity, record.holder or "(released)", spec.lease_transitions,
            )  # fmt: skip

    def _report(self) -> None:
        leader = self.is_leader()
        if leader == self._was_leader:
            return
        self._was_leader = leader
        log.info("leadership_changed lease=%s identity=%s leader=%s", self._where, self.settings.identity, leader)
        if self._on_change is not None:
            self._on_change(leader)
