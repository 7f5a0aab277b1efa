"""The node buffer on a real control plane: real scheduler, real controllers, kwok GPU nodes.

Decisions reach the actuator the way they do in the daemon: an EngineView publishes
snapshots and the ActuationLoop applies them. The view here is a small fake that
publishes hand-written decisions, so each step of the forecast is explicit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from autoscaler import settings as daemon_settings
from autoscaler.adapters.kube import (
    ActuatorSettings,
    CapacityBufferUnavailableError,
    KubeActuator,
    OwnershipError,
)
from autoscaler.domain.placeholders import PlaceholderGroup, placeholder_name
from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot, TargetStatus
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.engine.actuation import ActuationLoop, start_actuation
from tests.e2e.waiting import exists, wait_for
from tests.harness.cluster import GPU_RESOURCE, ControlPlane, FakeNodeSpec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SERVING_IMAGE = "registry.invalid/pa-e2e/inference:1"  # never pulled: kwok runs no containers
GPUS_PER_NODE = 4
GPUS_PER_SERVING_POD = 2


# ----------------------------------------------------------------------------- helpers


class FakeEngineView:
    """Publishes snapshots the test writes: the EngineView seam of the daemon."""

    def __init__(self) -> None:
        self._snapshot = EngineSnapshot(generated_at=time.time())

    def publish(self, targets: dict[TargetKey, TargetSnapshot]) -> None:
        self._snapshot = EngineSnapshot(
            generated_at=time.time(),
            generation=self._snapshot.generation + 1,
            targets=MappingProxyType(dict(targets)),
        )

    def snapshot(self) -> EngineSnapshot:
        return self._snapshot

    def ensure_target(self, key: TargetKey, spec: Any) -> None:
        raise NotImplementedError("the actuation loop never registers targets")

    async def wait_for_target(self, key: TargetKey, timeout: float) -> TargetSnapshot | None:
        raise NotImplementedError("the actuation loop never waits for one target")

    async def wait_next(self, generation: int, timeout: float) -> EngineSnapshot:
        deadline = time.monotonic() + timeout
        while self._snapshot.generation <= generation and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self._snapshot


def target(
    namespace: str,
    workload: str | None,
    buffer: int,
    *,
    mode: str = "active",
    name: str = "so",
    max_buffer: int = 8,
) -> TargetSnapshot:
    metadata = {
        "query": "sum(rate(requests_total[1m]))",
        "capacityPerReplica": "10",
        "maxBufferReplicas": str(max_buffer),
        "mode": mode,
        **({"workloadName": workload} if workload else {}),
    }
    decision = Decision(
        replicas=2,
        reactive_replicas=2,
        buffer_replicas=buffer,
        reason=f"test plan: buffer {buffer}",
        forecast_at_lead=20.0,
        forecast_at_node_lead=20.0 + 10 * buffer,
        quantile_level=0.95,
        predictive=True,
    )
    empty = np.zeros(0, dtype=np.float64)
    return TargetSnapshot(
        key=target_key(namespace, name, metadata),
        spec=parse_spec(metadata),
        metric_name="predicted-replicas",
        status=TargetStatus.READY,
        updated_at=time.time(),
        last_sample_at=time.time(),
        decision=decision,
        decided_at=time.time(),
        forecast=None,
        forecast_start=None,
        history_timestamps=empty,
        history_values=empty,
        chosen_model="naive",
        model_scores=(),
        seasonal_periods=(),
        target_coverage=0.95,
        achieved_coverage=None,
        forecast_error_mase=None,
        last_error=None,
    )


def publish(view: FakeEngineView, *targets: TargetSnapshot) -> None:
    view.publish({t.key: t for t in targets})


@pytest.fixture
def gpu_pool(control_plane: ControlPlane) -> dict[str, Any]:
    """Two tainted kwok nodes of 4 GPUs that only pods with this pool's selector and toleration use."""
    pool = uuid.uuid4().hex[:8]
    taint = {"key": "pa-e2e/buffer-pool", "value": pool, "effect": "NoSchedule"}
    nodes = control_plane.create_fake_gpu_nodes(
        2,
        name_prefix=f"buffer-{pool}",
        spec=FakeNodeSpec(gpus=GPUS_PER_NODE, labels={"pa-e2e/buffer-pool": pool}, taints=[taint]),
    )
    control_plane.wait_for_nodes_ready(nodes)
    return {
        "nodes": nodes,
        "nodeSelector": {"pa-e2e/buffer-pool": pool},
        "tolerations": [{"key": taint["key"], "operator": "Equal", "value": pool, "effect": "NoSchedule"}],
    }


def create_workload(api: client.ApiClient, namespace: str, pool: dict[str, Any], *, replicas: int = 0) -> str:
    apps: Any = client.AppsV1Api(api)
    labels = {"app": "llm"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "llm"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": pool["nodeSelector"],
                        "tolerations": pool["tolerations"],
                        "containers": [
                            {
                                "name": "server",
                                "image": SERVING_IMAGE,
                                "resources": {
                                    "requests": {"cpu": "2", "memory": "8Gi", GPU_RESOURCE: str(GPUS_PER_SERVING_POD)},
                                    "limits": {GPU_RESOURCE: str(GPUS_PER_SERVING_POD)},
                                },
                            },
                            {"name": "metrics", "image": SERVING_IMAGE, "resources": {"requests": {"cpu": "100m"}}},
                        ],
                    },
                },
            },
        },
    )
    return "llm"


def pods(api: client.ApiClient, namespace: str, selector: str) -> list[Any]:
    core: Any = client.CoreV1Api(api)
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if not p.metadata.deletion_timestamp
    ]


def running(pod: Any) -> bool:
    return bool(pod.status.phase == "Running" and pod.spec.node_name)


def unschedulable(pod: Any) -> bool:
    conditions = {c.type: c for c in pod.status.conditions or []}
    scheduled = conditions.get("PodScheduled")
    return bool(
        pod.status.phase == "Pending"
        and not pod.spec.node_name
        and scheduled is not None
        and scheduled.status == "False"
        and scheduled.reason == "Unschedulable"
    )


PLACEHOLDERS = "app.kubernetes.io/instance=llm-placeholder"
SERVING = "app=llm"


def placeholder_counts(api: client.ApiClient, namespace: str) -> tuple[int, int]:
    """(running, unschedulable) placeholder pods."""
    found = pods(api, namespace, PLACEHOLDERS)
    return sum(map(running, found)), sum(map(unschedulable, found))


def expect_placeholders(api: client.ApiClient, namespace: str, running_count: int, pending: int) -> None:
    def settled() -> tuple[int, int] | None:
        counts = placeholder_counts(api, namespace)
        total = len(pods(api, namespace, PLACEHOLDERS))
        return counts if counts == (running_count, pending) and total == running_count + pending else None

    wait_for(f"{running_count} running and {pending} pending placeholders", settled, timeout_s=90)


async def expect_placeholders_async(api: client.ApiClient, namespace: str, running_count: int, pending: int) -> None:
    await asyncio.to_thread(expect_placeholders, api, namespace, running_count, pending)


# ----------------------------------------------------------------------------- tests


async def test_placeholders_fill_free_gpus_yield_to_serving_pods_and_follow_the_plan(
    api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]
) -> None:
    apps: Any = client.AppsV1Api(api)
    scheduling: Any = client.SchedulingV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    view = FakeEngineView()
    results: list[tuple[TargetKey, str, str | None]] = []
    loop = ActuationLoop(
        view,
        KubeActuator(api, ActuatorSettings(writes_per_minute=600, write_burst=10)),
        interval_seconds=0.5,
        on_result=lambda key, result, error: results.append((key, result, error)),
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(loop.run(stop))
    try:
        # 2 nodes x 4 GPUs = 8 GPUs = 4 serving-pod slots; a buffer of 4 takes all of them.
        publish(view, target(namespace, workload, 4))
        await expect_placeholders_async(api, namespace, 4, 0)
        pc = scheduling.read_priority_class("predictive-autoscaler-placeholder")
        assert (pc.value, pc.preemption_policy, bool(pc.global_default)) == (-10, "Never", False)
        placeholder = apps.read_namespaced_deployment(placeholder_name(workload), namespace)
        [pause] = placeholder.spec.template.spec.containers
        assert pause.resources.requests == {"cpu": "2100m", "memory": "8589934592", GPU_RESOURCE: "2"}
        assert pause.resources.limits == {GPU_RESOURCE: "2"}
        assert placeholder.spec.template.spec.node_selector == gpu_pool["nodeSelector"]
        for pod in pods(api, namespace, PLACEHOLDERS):
            assert pod.spec.node_name in gpu_pool["nodes"]
            assert pod.spec.priority == -10

        # Real serving pods (priority 0) arrive: the scheduler preempts placeholders for them.
        apps.patch_namespaced_deployment_scale(workload, namespace, {"spec": {"replicas": 2}})

        def serving_running() -> list[Any] | None:
            found = pods(api, namespace, SERVING)
            return found if len(found) == 2 and all(map(running, found)) else None

        serving = await asyncio.to_thread(wait_for, "2 serving pods to run", serving_running, 90)
        assert {p.spec.node_name for p in serving} <= set(gpu_pool["nodes"])
        # The displaced placeholders wait Pending: the signal a cluster autoscaler acts on.
        await expect_placeholders_async(api, namespace, 2, 2)
        core: Any = client.CoreV1Api(api)
        events = core.list_namespaced_event(namespace, field_selector="reason=Preempted").items
        assert len(events) >= 2, [(e.involved_object.name, e.message) for e in events]

        # The forecast falls: the buffer shrinks, and Pending placeholders go first.
        publish(view, target(namespace, workload, 1))
        await expect_placeholders_async(api, namespace, 1, 0)
        # The forecast rises: one more fits on the free slot, the rest waits for a node.
        publish(view, target(namespace, workload, 3))
        await expect_placeholders_async(api, namespace, 2, 1)
        assert apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.replicas == 3
        assert all(map(running, pods(api, namespace, SERVING)))
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
    assert {result for _, result, _ in results} >= {"created", "updated", "unchanged"}
    assert not [r for r in results if r[1] == "error"]


@pytest.fixture
def own_api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """A client of the test's own, free to be instrumented."""
    with control_plane.api_client() as api_client:
        yield api_client


def test_writes_are_idempotent_and_rate_limited(
    own_api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = own_api
    apps: Any = client.AppsV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    sent: list[str] = []
    send = api.call_api

    def counting(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(method)
        return send(method, url, *args, **kwargs)

    monkeypatch.setattr(api, "call_api", counting)
    actuator = KubeActuator(api, ActuatorSettings(writes_per_minute=1, write_burst=2))
    group = PlaceholderGroup(namespace, workload)
    assert actuator.apply_buffer(group, 1).action == "created"
    assert sent.count("PATCH") == 1  # one apply (plus a POST for the PriorityClass on a fresh cluster)
    sent.clear()
    for _ in range(3):
        assert actuator.apply_buffer(group, 1).action == "unchanged"
    assert set(sent) == {"GET"}, sent  # nothing but reads while the state matches
    assert actuator.apply_buffer(group, 2).action == "updated"
    assert actuator.apply_buffer(group, 3).action == "throttled"  # burst of 2 spent, 1 write a minute
    assert sent.count("PATCH") == 1
    assert apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.replicas == 2

    # A changed pod template (more GPUs per serving pod) reaches the placeholders as one whole write.
    apps.patch_namespaced_deployment(
        workload,
        namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "server", "resources": {"requests": {GPU_RESOURCE: "4"}, "limits": {GPU_RESOURCE: "4"}}}
        ]}}}},
    )  # fmt: skip
    fresh = KubeActuator(api, ActuatorSettings())
    assert fresh.apply_buffer(group, 2).action == "updated"
    template = apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.template
    assert template.spec.containers[0].resources.limits == {GPU_RESOURCE: "4"}
    assert template.spec.tolerations[0].value == gpu_pool["tolerations"][0]["value"]


def test_refuses_to_take_over_a_deployment_it_does_not_manage(
    api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]
) -> None:
    apps: Any = client.AppsV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    labels = {"app": "someone-else"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": placeholder_name(workload)},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            },
        },
    )
    with pytest.raises(OwnershipError, match=r"not labelled app\.kubernetes\.io/managed-by=predictive-autoscaler"):
        KubeActuator(api).apply_buffer(PlaceholderGroup(namespace, workload), 2)
    untouched = apps.read_namespaced_deployment(placeholder_name(workload), namespace)
    assert untouched.metadata.labels is None
    assert untouched.spec.selector.match_labels == labels
    assert untouched.spec.template.spec.containers[0].image == "x"


async def test_shadow_mode_and_standby_replicas_write_nothing(
    api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]
) -> None:
    apps: Any = client.AppsV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    actuator = KubeActuator(api)
    results: list[tuple[str, str | None]] = []

    view = FakeEngineView()
    publish(view, target(namespace, workload, 3, mode="shadow"))
    shadow = ActuationLoop(view, actuator, on_result=lambda _k, result, error: results.append((result, error)))
    intents = await shadow.reconcile(view.snapshot())
    [intent] = intents.values()
    assert (intent.replicas, intent.result, intent.written) == (3, "shadow", False)
    assert results == [("shadow", None)]

    class Standby:
        def is_leader(self) -> bool:
            return False

    publish(view, target(namespace, workload, 3))
    standby = ActuationLoop(view, actuator, leadership=Standby())
    [intent] = (await standby.reconcile(view.snapshot())).values()
    assert (intent.replicas, intent.result) == (3, "not_leader")

    assert not exists(lambda: apps.read_namespaced_deployment(placeholder_name(workload), namespace))


async def test_targets_group_by_workload_and_released_groups_scale_to_zero(
    api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]
) -> None:
    apps: Any = client.AppsV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    results: dict[TargetKey, tuple[str, str | None]] = {}
    view = FakeEngineView()
    loop = ActuationLoop(
        view, KubeActuator(api), on_result=lambda key, result, error: results.__setitem__(key, (result, error))
    )
    small, large = target(namespace, workload, 1, name="small"), target(namespace, workload, 3, name="large")
    watching = target(namespace, workload, 6, name="watching", mode="shadow")
    no_workload = target(namespace, None, 5, name="plain")
    disabled = target(namespace, workload, 0, name="disabled", max_buffer=0)
    publish(view, small, large, watching, no_workload, disabled)
    [intent] = (await loop.reconcile(view.snapshot())).values()
    assert (intent.group, intent.replicas, intent.result) == (PlaceholderGroup(namespace, workload), 3, "created")
    # Both plan 2 replicas; the large one needs 5 at the node lead time: 5 - 2 = 3.
    assert intent.reason.startswith(f"5 replicas needed at the node lead time ({large.key}) minus 2 run")
    assert results == {
        small.key: ("created", None),
        large.key: ("created", None),
        watching.key: ("shadow", None),
        no_workload.key: ("skipped", None),
        disabled.key: ("skipped", None),
    }
    assert apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.replicas == 3

    # The targets go away (ScaledObject deleted, or buffer disabled): the GPUs are given back.
    publish(view, no_workload, disabled)
    [intent] = (await loop.reconcile(view.snapshot())).values()
    assert (intent.replicas, intent.result) == (0, "updated")
    assert apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.replicas == 0
    assert await loop.reconcile(view.snapshot()) == {}  # released once, then left alone
    assert loop.intents() == {}


async def test_a_missing_workload_is_reported_not_raised(api: client.ApiClient, namespace: str) -> None:
    results: list[tuple[str, str | None]] = []
    view = FakeEngineView()
    publish(view, target(namespace, "ghost", 2))
    loop = ActuationLoop(view, KubeActuator(api), on_result=lambda _k, result, error: results.append((result, error)))
    [intent] = (await loop.reconcile(view.snapshot())).values()
    assert (intent.result, intent.written) == ("error", False)
    assert results == [("error", f"workloadName 'ghost': no Deployment {namespace}/ghost")]


async def test_daemon_wiring_elects_writes_and_releases_on_stop(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]
) -> None:
    apps: Any = client.AppsV1Api(api)
    leases: Any = client.CoordinationV1Api(api)
    workload = create_workload(api, namespace, gpu_pool)
    view = FakeEngineView()
    publish(view, target(namespace, workload, 2))
    settings = daemon_settings.Settings(
        actuator=daemon_settings.ActuatorSettings(mode="placeholders", kubeconfig=str(control_plane.kubeconfig)),
        leader_election=daemon_settings.LeaderElectionSettings(
            enabled=True, namespace=namespace, lease_duration_seconds=3, renew_period_seconds=0.5
        ),
    )
    results: list[str] = []
    handle = await start_actuation(
        settings, view, api_client=api, on_result=lambda _k, result, _e: results.append(result)
    )
    try:

        def placeholder_replicas() -> int | None:
            if not exists(lambda: apps.read_namespaced_deployment(placeholder_name(workload), namespace)):
                return None
            return int(apps.read_namespaced_deployment(placeholder_name(workload), namespace).spec.replicas) or None

        # The first pass may come before the first lease round; winning the lease wakes the loop.
        assert await asyncio.to_thread(wait_for, "the elected daemon to write", placeholder_replicas, 5) == 2
        assert leases.read_namespaced_lease("predictive-autoscaler", namespace).spec.holder_identity
    finally:
        await handle.stop()
    assert leases.read_namespaced_lease("predictive-autoscaler", namespace).spec.holder_identity is None
    assert "created" in results


# ----------------------------------------------------------------------------- CapacityBuffer

# The CapacityBuffer API as published by SIG Autoscaling (autoscaling.x-k8s.io), reduced
# to the fields the actuator writes. The cluster autoscaler's own CRD ships in the
# k8s.io/autoscaler module, which the test environment's module proxy does not serve.
CAPACITY_BUFFER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "capacitybuffers.autoscaling.x-k8s.io"},
    "spec": {
        "group": "autoscaling.x-k8s.io",
        "scope": "Namespaced",
        "names": {
            "kind": "CapacityBuffer",
            "listKind": "CapacityBufferList",
            "plural": "capacitybuffers",
            "singular": "capacitybuffer",
        },
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "scalableRef": {
                                        "type": "object",
                                        "required": ["kind", "name"],
                                        "properties": {
                                            "apiGroup": {"type": "string"},
                                            "kind": {"type": "string", "minLength": 1},
                                            "name": {"type": "string", "minLength": 1},
                                        },
                                    },
                                    "podTemplateRef": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {"name": {"type": "string", "minLength": 1}},
                                    },
                                    "replicas": {"type": "integer", "format": "int32", "minimum": 0},
                                    "percentage": {"type": "integer", "format": "int32", "minimum": 0},
                                    "provisioningStrategy": {"type": "string"},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def capacity_buffer_api(api: client.ApiClient) -> Iterator[None]:
    extensions: Any = client.ApiextensionsV1Api(api)
    name = CAPACITY_BUFFER_CRD["metadata"]["name"]  # type: ignore[index]
    extensions.create_custom_resource_definition(CAPACITY_BUFFER_CRD)

    def established() -> bool:
        crd = extensions.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for("the CapacityBuffer CRD to be established", established)
    yield
    extensions.delete_custom_resource_definition(name)
    wait_for(
        "the CapacityBuffer CRD to be removed",
        lambda: not exists(lambda: extensions.read_custom_resource_definition(name)),
    )


def test_capacity_buffer_mode_needs_the_api(api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any]) -> None:
    workload = create_workload(api, namespace, gpu_pool)
    auto = KubeActuator(api, ActuatorSettings(mode="auto"))
    assert auto.resolved_mode() == "placeholders"
    with pytest.raises(CapacityBufferUnavailableError, match=r"does not serve capacitybuffers\.autoscaling\.x-k8s\.io"):
        KubeActuator(api, ActuatorSettings(mode="capacitybuffer")).apply_buffer(
            PlaceholderGroup(namespace, workload), 1
        )


def test_capacity_buffer_is_discovered_and_driven(
    api: client.ApiClient, namespace: str, gpu_pool: dict[str, Any], capacity_buffer_api: None
) -> None:
    apps: Any = client.AppsV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    workload = create_workload(api, namespace, gpu_pool)
    actuator = KubeActuator(api, ActuatorSettings(mode="auto"))
    assert actuator.capacity_buffer_version() == "v1beta1"
    group = PlaceholderGroup(namespace, workload)
    assert actuator.apply_buffer(group, 2).action == "created"
    assert actuator.apply_buffer(group, 2).action == "unchanged"
    assert actuator.apply_buffer(group, 5).action == "updated"
    buffer = custom.get_namespaced_custom_object(
        "autoscaling.x-k8s.io", "v1beta1", namespace, "capacitybuffers", placeholder_name(workload)
    )
    assert buffer["spec"] == {
        "scalableRef": {"apiGroup": "apps", "kind": "Deployment", "name": workload},
        "replicas": 5,
        "provisioningStrategy": "buffer.x-k8s.io/active-capacity",
    }
    # No placeholder pods in this mode: the cluster autoscaler keeps the room itself.
    assert not exists(lambda: apps.read_namespaced_deployment(placeholder_name(workload), namespace))
