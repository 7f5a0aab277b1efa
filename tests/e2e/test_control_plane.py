"""Smoke test of the e2e harness: a real control plane with kwok GPU nodes.

Checks the pieces later e2e tests rely on: the pinned apiserver version, kwok
nodes turning Ready with ``nvidia.com/gpu`` capacity, the real Deployment
controller and scheduler placing GPU pods that kwok then runs, and priority
preemption by the real scheduler.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e import waiting
from tests.harness.cluster import (
    GPU_RESOURCE,
    POD_READY_DELAY_ANNOTATION,
    ControlPlane,
    FakeNodeSpec,
    load_versions,
)

wait_for = functools.partial(waiting.wait_for, timeout_s=90.0, interval_s=0.5)  # pods start in seconds

FAKE_IMAGE = "registry.invalid/pa-e2e/fake-inference:1"  # never pulled: kwok runs no containers


def _gpu_container(gpus: int = 1) -> dict[str, Any]:
    return {
        "name": "model-server",
        "image": FAKE_IMAGE,
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi", GPU_RESOURCE: str(gpus)},
            "limits": {GPU_RESOURCE: str(gpus)},
        },
    }


def _pod_ready(pod: Any) -> bool:
    conditions = {c.type: c.status for c in (pod.status.conditions or [])}
    return pod.status.phase == "Running" and conditions.get("Ready") == "True"


def test_version_is_pinned(control_plane: ControlPlane) -> None:
    pinned = load_versions()["KUBE_VERSION"]
    version = control_plane.version()
    assert version["gitVersion"] == pinned
    major, minor = pinned.lstrip("v").split(".")[:2]
    assert (version["major"], version["minor"]) == (major, minor)


def test_gpu_deployment_runs_on_kwok_nodes(control_plane: ControlPlane, api: client.ApiClient, namespace: str) -> None:
    # Any: the client's models have Optional fields everywhere; the test asserts on them.
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)

    nodes = control_plane.create_fake_gpu_nodes(2, name_prefix="smoke-gpu", spec=FakeNodeSpec(gpus=4))
    control_plane.wait_for_nodes_ready(nodes)
    for name in nodes:
        node = core.read_node(name)
        assert node.status.allocatable[GPU_RESOURCE] == "4"
        assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"

    labels = {"app": "smoke-inference"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "smoke-inference"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [_gpu_container(1)],
                        "nodeSelector": {"type": "kwok"},
                    },
                },
            },
        },
    )

    def deployment_ready() -> bool:
        dep = apps.read_namespaced_deployment("smoke-inference", namespace)
        return (dep.status.ready_replicas or 0) == 3 and (dep.status.available_replicas or 0) == 3

    wait_for("deployment smoke-inference to have 3 ready replicas", deployment_ready)

    replica_sets = apps.list_namespaced_replica_set(namespace).items
    assert [rs.metadata.owner_references[0].kind for rs in replica_sets] == ["Deployment"]

    pods = core.list_namespaced_pod(namespace, label_selector="app=smoke-inference").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name in nodes, f"{pod.metadata.name} on {pod.spec.node_name}"
        assert _pod_ready(pod)
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        scheduled = [c for c in pod.status.conditions if c.type == "PodScheduled"]
        assert scheduled and scheduled[0].status == "True"


def test_high_priority_pod_preempts_low_priority_gpu_pod(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    core: Any = client.CoreV1Api(api)
    scheduling: Any = client.SchedulingV1Api(api)

    taint = {"key": "pa-e2e/preemption", "value": "true", "effect": "NoSchedule"}
    spec = FakeNodeSpec(gpus=1, labels={"pa-e2e/pool": "preemption"}, taints=[taint])
    [node] = control_plane.create_fake_gpu_nodes(1, name_prefix="smoke-preempt", spec=spec)
    control_plane.wait_for_nodes_ready([node])

    suffix = namespace.removeprefix("smoke-")
    low_pc, high_pc = f"pa-e2e-low-{suffix}", f"pa-e2e-high-{suffix}"
    scheduling.create_priority_class({"metadata": {"name": low_pc}, "value": 100})
    scheduling.create_priority_class({"metadata": {"name": high_pc}, "value": 1_000_000})
    try:
        placement = {
            "nodeSelector": {"pa-e2e/pool": "preemption"},
            "tolerations": [{"key": taint["key"], "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        }

        def pod(name: str, priority_class: str) -> dict[str, Any]:
            return {
                "metadata": {"name": name},
                "spec": {"priorityClassName": priority_class, "containers": [_gpu_container(1)], **placement},
            }

        core.create_namespaced_pod(namespace, pod("low", low_pc))

        def low_running() -> Any:
            p = core.read_namespaced_pod("low", namespace)
            return p if _pod_ready(p) else None

        low = wait_for("low-priority pod to run", low_running)
        assert low.spec.node_name == node
        assert low.spec.priority == 100

        core.create_namespaced_pod(namespace, pod("high", high_pc))

        def high_running() -> Any:
            p = core.read_namespaced_pod("high", namespace)
            return p if _pod_ready(p) else None

        high = wait_for("high-priority pod to preempt the low one and run", high_running)
        assert high.spec.node_name == node

        def low_gone() -> bool:
            try:
                core.read_namespaced_pod("low", namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        wait_for("preempted low-priority pod to be removed", low_gone, timeout_s=30)
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=low").items
        assert any(e.reason == "Preempted" for e in events), [(e.reason, e.message) for e in events]
    finally:
        scheduling.delete_priority_class(low_pc)
        scheduling.delete_priority_class(high_pc)


def test_pod_ready_delay_annotation_holds_pod_not_ready(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    core: Any = client.CoreV1Api(api)
    [node] = control_plane.create_fake_gpu_nodes(1, name_prefix=f"smoke-delay-{namespace[-8:]}")
    control_plane.wait_for_nodes_ready([node])

    def make(name: str, annotations: dict[str, str]) -> None:
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [_gpu_container(1)]},
            },
        )

    start = time.monotonic()
    make("slow", {POD_READY_DELAY_ANNOTATION: "4s"})
    make("fast", {})

    def ready(name: str) -> Any:
        p = core.read_namespaced_pod(name, namespace)
        return p if _pod_ready(p) else None

    wait_for("pod without the annotation to become ready", lambda: ready("fast"), timeout_s=30)
    slow = core.read_namespaced_pod("slow", namespace)
    assert slow.spec.node_name == node  # bound by the scheduler ...
    assert not _pod_ready(slow)  # ... but still starting
    wait_for("annotated pod to become ready", lambda: ready("slow"), timeout_s=30)
    assert time.monotonic() - start >= 3.5
