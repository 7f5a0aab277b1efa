"""The scale target's replicas read from the real control plane, as the daemon's identity.

The identity is a ServiceAccount bound to exactly deploy/rbac/rules.yaml
(`tests/e2e/test_rbac.py`), so these reads also prove the rules grant them. kwok runs
the pods, so `readyReplicas` is set by the real Deployment and StatefulSet controllers.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.adapters.replicas import KubeReplicaReader, ReplicaReadError
from autoscaler.domain.signals import ReplicaCounts
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from tests.e2e.test_rbac import Identity, identity  # noqa: F401  (the fixture)
from tests.harness.cluster import ControlPlane, FakeNodeSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ORIGIN = 1_700_000_000.0


@pytest.fixture
def pool(control_plane: ControlPlane) -> dict[str, Any]:
    """One tainted kwok node that only this test's pods use."""
    name = uuid.uuid4().hex[:8]
    taint = {"key": "pa-e2e/replicas-pool", "value": name, "effect": "NoSchedule"}
    nodes = control_plane.create_fake_gpu_nodes(
        1, name_prefix=f"replicas-{name}", spec=FakeNodeSpec(labels={"pa-e2e/replicas-pool": name}, taints=[taint])
    )
    control_plane.wait_for_nodes_ready(nodes)
    return {
        "nodeSelector": {"pa-e2e/replicas-pool": name},
        "tolerations": [{"key": taint["key"], "operator": "Equal", "value": name, "effect": "NoSchedule"}],
    }


def workload(name: str, replicas: int, pool: dict[str, Any], **extra: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {**pool, "containers": [{"name": "s", "image": "x", "resources": {"requests": {"cpu": "1"}}}]},
            },
            **extra,
        },
    }


async def read_until(
    reader: KubeReplicaReader, expected: ReplicaCounts, *, namespace: str, kind: str, name: str
) -> None:
    """Poll until the counts match; RBAC bindings reach the authoriser a moment after creation."""
    deadline = asyncio.get_running_loop().time() + 60
    last: ReplicaCounts | ReplicaReadError | None = None
    while last != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{kind} {name}: last read {last!r}"
        try:
            last = await reader.read(namespace=namespace, kind=kind, name=name)
        except ReplicaReadError as error:
            assert "HTTP 403" in str(error), error
            last = error
        await asyncio.sleep(0.2)


async def test_reads_ready_and_desired_replicas_with_the_daemons_rules(
    identity: tuple[Identity, client.ApiClient],  # noqa: F811
    pool: dict[str, Any],
) -> None:
    who, daemon_api = identity
    apps: Any = client.AppsV1Api(who.admin)
    apps.create_namespaced_deployment(who.targets, workload("chat", 2, pool))
    apps.create_namespaced_stateful_set(who.targets, workload("kv", 3, pool, serviceName="kv"))
    reader = KubeReplicaReader(daemon_api)
    await read_until(reader, ReplicaCounts(ready=2, desired=2), namespace=who.targets, kind="Deployment", name="chat")
    await read_until(reader, ReplicaCounts(ready=3, desired=3), namespace=who.targets, kind="StatefulSet", name="kv")

    # The HPA asks for more: desired moves at once, ready once the pods are.
    apps.patch_namespaced_deployment_scale("chat", who.targets, {"spec": {"replicas": 4}})
    read = await reader.read(namespace=who.targets, kind="Deployment", name="chat")
    assert read.desired == 4 and read.ready <= 4
    await read_until(reader, ReplicaCounts(ready=4, desired=4), namespace=who.targets, kind="Deployment", name="chat")

    with pytest.raises(ReplicaReadError, match=rf"Deployment {who.targets}/absent: HTTP 404"):
        await reader.read(namespace=who.targets, kind="Deployment", name="absent")
    apps.create_namespaced_deployment(who.elsewhere, workload("chat", 1, pool))
    with pytest.raises(ReplicaReadError, match=rf"Deployment {who.elsewhere}/chat: HTTP 403"):
        await reader.read(namespace=who.elsewhere, kind="Deployment", name="chat")  # no binding there

    # The engine plans from what the API reports (metrics from a replayed series).
    metadata = {
        "query": "replay:demand",
        "prometheus": "replay",
        "capacityPerReplica": "10",
        "historyWindow": "1d",
        "replicaSource": "kubernetes",
        "workloadName": "chat",
    }
    trace = ReplayTrace(name="demand", values=np.full(3000, 15.0), step_seconds=60.0, origin=ORIGIN, offset_rows=1440)
    engine = Engine(
        sources={"replay": ReplaySource([trace])},
        replicas=reader,
        clock=ScaledClock(start=ORIGIN, speed=600),
        fit_executor=None,
        settings=EngineSettings(tick_seconds=0.01),
    )
    key = target_key(who.targets, "chat", metadata)
    await engine.start()
    try:
        engine.ensure_target(key, parse_spec(metadata))
        snapshot = await engine.wait_for_target(key, timeout=30)
        assert snapshot is not None and snapshot.decision is not None, snapshot
        assert engine._targets[key].pipeline.observed_replicas == ReplicaCounts(ready=4, desired=4)
    finally:
        await engine.stop()
