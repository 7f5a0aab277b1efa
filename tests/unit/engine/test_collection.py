"""Reading every signal of a target, aligned on the step grid, with its replica counts.

The source is the demo's real replay adapter over synthetic traces, so which step has
which value is known exactly; the real Prometheus answers the same calls in
tests/integration/test_engine_prometheus.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.domain.signals import ReplicaCounts, SignalKind
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.engine.collection import read_range, read_step

ORIGIN = 1_700_000_000.0
STEP = 60.0
BASE = {
    "arrivalsQuery": "replay:arrivals",
    "podsQuery": "replay:pods",
    "prometheus": "replay",
    "capacityPerReplica": "20",
    "historyWindow": "1d",
}
PROMETHEUS_REPLICAS = {**BASE, "replicaSource": "prometheus", "replicasQuery": "replay:ready"}
KUBERNETES_REPLICAS = {**BASE, "replicaSource": "kubernetes", "workloadName": "llm"}
KEY = target_key("llm", "chat", BASE)


def trace(name: str, values: list[float], *, history_rows: int) -> ReplayTrace:
    """`values` laid so that row `history_rows` falls at ORIGIN; earlier rows are history."""
    return ReplayTrace(name=name, values=np.asarray(values), step_seconds=STEP, origin=ORIGIN, offset_rows=history_rows)


def source(*, pods_at_origin: float = 4.0) -> ReplaySource:
    """Arrivals for 10 steps up to ORIGIN; the pod count only for the last 5 of them."""
    return ReplaySource(
        [
            trace("arrivals", [float(row) for row in range(11)], history_rows=10),
            trace("pods", [4.0, 4.0, 3.0, 4.0, pods_at_origin, 4.0], history_rows=4),
            trace("ready", [5.0] * 11, history_rows=10),
        ]
    )


async def test_a_range_keeps_the_steps_every_signal_has_on_one_grid() -> None:
    spec = parse_spec(PROMETHEUS_REPLICAS)
    steps = await read_range(source(), spec, start=ORIGIN - 9 * STEP, end=ORIGIN)
    assert [step.timestamp for step in steps] == [ORIGIN - 4 * STEP + index * STEP for index in range(5)]
    assert [step.values[SignalKind.ARRIVALS] for step in steps] == [6.0, 7.0, 8.0, 9.0, 10.0]
    assert [step.values[SignalKind.PODS] for step in steps] == [4.0, 4.0, 3.0, 4.0, 4.0]
    assert {step.replicas for step in steps} == {ReplicaCounts(ready=5)}  # from replicasQuery's range


async def test_a_range_of_a_kubernetes_target_counts_ready_replicas_from_its_pods_signal() -> None:
    """The API keeps no history, so a warm start takes the pods the sums covered."""
    steps = await read_range(source(), parse_spec(KUBERNETES_REPLICAS), start=ORIGIN - 9 * STEP, end=ORIGIN)
    assert [step.replicas for step in steps] == [ReplicaCounts(ready=count) for count in (4, 4, 3, 4, 4)]


async def test_a_range_without_a_replica_source_has_no_counts() -> None:
    steps = await read_range(source(), parse_spec(BASE), start=ORIGIN - 9 * STEP, end=ORIGIN)
    assert len(steps) == 5 and all(step.replicas is None for step in steps)


async def test_a_step_reads_every_signal_its_age_and_the_replicas() -> None:
    reading = await read_step(source(), parse_spec(PROMETHEUS_REPLICAS), KEY, replicas=None, at=ORIGIN + 10)
    assert reading.missing == ()
    assert dict(reading.signals.values) == {SignalKind.ARRIVALS: 10.0, SignalKind.PODS: 4.0}
    assert reading.signals.replicas == ReplicaCounts(ready=5)
    assert reading.newest_sample_at == ORIGIN  # the replay's samples sit on the step
    assert reading.replica_error is None


async def test_a_missing_signal_is_left_out_never_zero() -> None:
    reading = await read_step(source(pods_at_origin=math.nan), parse_spec(BASE), KEY, replicas=None, at=ORIGIN)
    assert reading.missing == (SignalKind.PODS,)
    assert SignalKind.PODS not in reading.signals.values


class FailingReplicaReader:
    """The API server refusing the read (RBAC, an outage): the e2e tests meet the real one."""

    async def read(self, *, namespace: str, kind: str, name: str) -> ReplicaCounts:
        raise PermissionError(f"deployments.apps {name!r} is forbidden in {namespace}")


async def test_a_failed_replica_read_leaves_the_step_without_a_count() -> None:
    spec = parse_spec(KUBERNETES_REPLICAS)
    reading = await read_step(source(), spec, KEY, replicas=FailingReplicaReader(), at=ORIGIN)
    assert reading.missing == () and reading.signals.replicas is None
    assert reading.replica_error is not None and "forbidden" in reading.replica_error


async def test_a_failed_signal_query_fails_the_step() -> None:
    spec = parse_spec({**BASE, "podsQuery": "replay:unknown"})
    with pytest.raises(LookupError, match="replay:unknown"):
        await read_step(source(), spec, KEY, replicas=None, at=ORIGIN)
