"""Lease election rules, on an injected monotonic clock.

The pure rules are table-driven; the elector runs against an in-memory Lease store
with the API server's resourceVersion semantics (409 on a stale write), so takeover,
renewal deadlines and release are checked without sleeping.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from autoscaler.adapters.leader import (
    Action,
    LeaderElector,
    LeaseRecord,
    LeaseSettings,
    LeaseSettingsError,
    Observation,
    lease_spec,
    micro_time,
    next_action,
    observe,
)

ME, RIVAL = "pod-a-1234", "pod-b-5678"
T0 = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def record(holder: str | None, *, rv: str = "7", duration: int = 15, transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(
        holder=holder, lease_duration_seconds=duration, acquire_time=T0, transitions=transitions, resource_version=rv
    )


@pytest.mark.parametrize(
    ("lease", "observation", "now", "action"),
    [
        (None, None, 0.0, Action.CREATE),
        (record(ME), Observation("7", 0.0), 100.0, Action.RENEW),
        (record(None), Observation("7", 0.0), 0.0, Action.TAKE_OVER),
        (record(""), Observation("7", 0.0), 0.0, Action.TAKE_OVER),
        (record(RIVAL), Observation("7", 0.0), 14.9, Action.WAIT),
        (record(RIVAL), Observation("7", 0.0), 15.0, Action.TAKE_OVER),
        (record(RIVAL, duration=3), Observation("7", 10.0), 13.0, Action.TAKE_OVER),
        (record(RIVAL), Observation("6", 0.0), 100.0, Action.WAIT),  # the record moved on: not seen long enough
        (record(RIVAL), None, 100.0, Action.WAIT),
    ],
)
def test_next_action(lease: LeaseRecord | None, observation: Observation | None, now: float, action: Action) -> None:
    assert next_action(lease, identity=ME, observation=observation, now=now) is action


@pytest.mark.parametrize(
    ("previous", "rv", "now", "expected"),
    [
        (None, "7", 5.0, Observation("7", 5.0)),
        (Observation("7", 1.0), "7", 5.0, Observation("7", 1.0)),
        (Observation("6", 1.0), "7", 5.0, Observation("7", 5.0)),
    ],
)
def test_observe_restarts_the_timer_on_change(
    previous: Observation | None, rv: str, now: float, expected: Observation
) -> None:
    assert observe(previous, record(RIVAL, rv=rv), now) == expected


SETTINGS = LeaseSettings(namespace="ops", identity=ME, lease_duration_seconds=15)
LATER = T0 + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("action", "lease", "transitions", "acquired"),
    [
        (Action.CREATE, None, 0, LATER),
        (Action.RENEW, record(ME, transitions=4), 4, T0),
        (Action.TAKE_OVER, record(RIVAL, transitions=4), 5, LATER),
        (Action.TAKE_OVER, record(None, transitions=4), 5, LATER),
    ],
)
def test_lease_spec(action: Action, lease: LeaseRecord | None, transitions: int, acquired: datetime) -> None:
    spec = lease_spec(action, lease, settings=SETTINGS, now_wall=LATER)
    assert spec.holder_identity == ME
    assert spec.lease_duration_seconds == 15
    assert spec.lease_transitions == transitions
    assert spec.acquire_time == acquired
    assert spec.renew_time == LATER


def test_micro_time_always_carries_a_fraction() -> None:
    whole = datetime(2026, 1, 1, tzinfo=UTC)
    assert "." in micro_time(whole).isoformat()
    assert micro_time(T0) == T0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identity": ""}, "identity"),
        ({"lease_duration_seconds": 0}, "lease_duration_seconds"),
        ({"renew_deadline_seconds": 15.0}, "renew_deadline_seconds < lease_duration_seconds"),
        ({"retry_period_seconds": 10.0}, "retry_period_seconds < renew_deadline_seconds"),
        ({"retry_period_seconds": 0.0}, "0 < retry_period_seconds"),
    ],
)
def test_settings_that_allow_two_writers_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LeaseSettingsError, match=message):
        LeaseSettings(**{"namespace": "ops", "identity": ME, **kwargs})  # type: ignore[arg-type]


def test_failover_bound() -> None:
    assert LeaseSettings(namespace="ops", identity=ME).failover_bound_seconds == 25.0


# ----------------------------------------------------------------------------- elector on a fake store


class LeaseStore:
    """One Lease with the API server's optimistic concurrency; `down` simulates an outage."""

    def __init__(self) -> None:
        self.lease: client.V1Lease | None = None
        self.versions = itertools.count(1)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=503, reason="Service Unavailable")

    def read_namespaced_lease(self, name: str, namespace: str, *, _request_timeout: float) -> client.V1Lease:
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(
        self, namespace: str, body: client.V1Lease, *, _request_timeout: float
    ) -> client.V1Lease:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, *, _request_timeout: float
    ) -> client.V1Lease:
        self._check()
        assert self.lease is not None and body.metadata is not None and self.lease.metadata is not None
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    def _store(self, body: client.V1Lease) -> client.V1Lease:
        stored = copy.deepcopy(body)
        assert stored.metadata is not None
        stored.metadata.resource_version = str(next(self.versions))
        self.lease = stored
        return copy.deepcopy(stored)

    @property
    def holder(self) -> str | None:
        return self.lease.spec.holder_identity if self.lease and self.lease.spec else None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


FAST = {"namespace": "ops", "lease_duration_seconds": 3, "renew_deadline_seconds": 2.0, "retry_period_seconds": 0.5}
SETTINGS_FAST = LeaseSettings(identity=ME, **FAST)  # type: ignore[arg-type]


@pytest.fixture
def store() -> LeaseStore:
    return LeaseStore()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def elector(store: LeaseStore, clock: FakeClock, identity: str, changes: list[bool] | None = None) -> LeaderElector:
    return LeaderElector(
        store,
        LeaseSettings(identity=identity, **FAST),  # type: ignore[arg-type]
        monotonic=clock,
        wall=lambda: T0 + timedelta(seconds=clock.now),
        on_change=None if changes is None else changes.append,
    )


def test_first_candidate_creates_and_second_waits(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert store.holder == ME
    assert store.lease is not None and store.lease.spec is not None
    assert store.lease.spec.lease_transitions == 0


def test_leader_is_valid_until_the_renew_deadline_after_its_write_started(store: LeaseStore, clock: FakeClock) -> None:
    changes: list[bool] = []
    a = elector(store, clock, ME, changes)
    assert a.try_acquire_or_renew()
    assert a.valid_until == 1002.0
    clock.now = 1001.99
    assert a.is_leader()
    clock.now = 1002.0
    assert not a.is_leader()  # stopped writing on its own, without talking to the server
    assert a.try_acquire_or_renew()  # renewing restores it
    assert changes == [True]  # changes are reported per round; no round saw the lapse


def test_takeover_only_after_the_lease_duration_and_never_two_writers(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    assert a.try_acquire_or_renew()
    crashed_at = clock.now
    took_over_at = None
    while took_over_at is None:  # `a` crashed: it never renews again
        clock.now += 0.5
        assert not (a.is_leader() and b.is_leader())
        if b.try_acquire_or_renew():
            took_over_at = clock.now
        assert not (a.is_leader() and b.is_leader())
    assert 3.0 <= took_over_at - crashed_at <= SETTINGS_FAST.failover_bound_seconds
    assert store.holder == RIVAL
    assert store.lease is not None and store.lease.spec is not None
    assert store.lease.spec.lease_transitions == 1


def test_live_leader_keeps_the_lease(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    for _ in range(40):
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
        clock.now += 0.5
    assert store.holder == ME


def test_leader_that_cannot_renew_stops_before_a_rival_can_start(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    store.down = True
    clock.now += 0.5
    assert a.try_acquire_or_renew()  # the outage is shorter than the deadline so far
    assert a.last_error == "HTTP 503 Service Unavailable"
    clock.now += 1.5
    assert not a.try_acquire_or_renew()
    store.down = False
    clock.now += 1.0
    assert b.try_acquire_or_renew()
    assert not a.try_acquire_or_renew()  # sees the rival's fresh record and waits


def test_lost_race_is_not_leadership(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    assert a.try_acquire_or_renew()
    original_read = store.read_namespaced_lease

    def read_then_rival_renews(name: str, namespace: str, *, _request_timeout: float) -> client.V1Lease:
        seen = original_read(name, namespace, _request_timeout=_request_timeout)
        assert store.lease is not None
        store._store(store.lease)  # a concurrent write moves the resourceVersion on
        return seen

    store.read_namespaced_lease = read_then_rival_renews  # type: ignore[method-assign]
    assert not a.try_acquire_or_renew()
    assert a.last_error == "HTTP 409 Conflict"
    assert not b.is_leader()


def test_release_hands_over_at_once(store: LeaseStore, clock: FakeClock) -> None:
    a, b = elector(store, clock, ME), elector(store, clock, RIVAL)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.is_leader()
    assert store.holder is None
    assert b.try_acquire_or_renew()  # no waiting for the lease duration
    assert not a.release()  # not ours any more: left alone
    assert store.holder == RIVAL


async def test_run_releases_on_stop(store: LeaseStore, clock: FakeClock) -> None:
    a = elector(store, clock, ME)
    stop = asyncio.Event()
    task = asyncio.create_task(a.run(stop))
    for _ in range(200):
        if store.holder == ME:
            break
        await asyncio.sleep(0.01)
    assert store.holder == ME
    stop.set()
    await asyncio.wait_for(task, 5)
    assert store.holder is None
