"""The Kubernetes and daemon side the KEDA chain tests share.

A client for the few API calls they make, the GPU Deployment they scale (pause pods on
kwok nodes) and reads of the daemon's loopback HTTP API.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from tests.harness.cluster import Binaries, ControlPlane

NAMESPACE = "default"


class Kube:
    """The few API calls the chain tests make, on one client."""

    def __init__(self, cluster: ControlPlane) -> None:
        from kubernetes import client  # noqa: PLC0415

        self._api: Any = cluster.api_client()
        self.apps: Any = client.AppsV1Api(self._api)
        self.autoscaling: Any = client.AutoscalingV2Api(self._api)
        self.custom: Any = client.CustomObjectsApi(self._api)

    def close(self) -> None:
        self._api.close()

    def replicas(self, name: str) -> tuple[int, int]:
        """(spec.replicas, status.readyReplicas) of a Deployment."""
        deployment = self.apps.read_namespaced_deployment(name, NAMESPACE)
        return int(deployment.spec.replicas or 0), int(deployment.status.ready_replicas or 0)

    def scaled_object(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", name
        )
        return result

    def condition(self, name: str, kind: str) -> str | None:
        for condition in self.scaled_object(name).get("status", {}).get("conditions", []):
            if condition.get("type") == kind:
                return str(condition.get("status"))
        return None


def gpu_deployment(name: str, *, replicas: int) -> dict[str, Any]:
    """A Deployment of pause pods that each ask for one GPU, so they land on kwok's GPU nodes."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "registry.k8s.io/pause:3.10",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def scaled_object(name: str, *, trigger: dict[str, Any], max_replicas: int, behavior: dict[str, Any]) -> dict[str, Any]:
    """A ScaledObject on Deployment ``name`` polled every 2 s, its HPA shaped by ``behavior``."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": 2,
            "minReplicaCount": 1,
            "maxReplicaCount": max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
            "triggers": [trigger],
        },
    }


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def daemon_target(http_port: int, name: str) -> dict[str, Any] | None:
    """The daemon's summary of target ``name`` from its JSON API, None before it has one."""
    url = f"http://127.0.0.1:{http_port}/api/v1/targets/{NAMESPACE}/{name}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            targets: list[dict[str, Any]] = json.load(response)["targets"]
    except (urllib.error.URLError, OSError, KeyError, ValueError):
        return None
    return targets[0] if targets else None


def daemon_command(*, prometheus_url: str, grpc_port: int, http_port: int, config: Path | None = None) -> list[str]:
    """`autoscaler serve` on loopback with a text log; `config` adds a configuration file."""
    command = [sys.executable, "-m", "autoscaler", "serve", "--prometheus-url", prometheus_url, "--host", "127.0.0.1"]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--log-format", "text"]
    return command if config is None else [*command, "--config", str(config)]


class SecondlyPoller:
    """Calls `poll` once a second in a daemon thread, from `with` entry to exit."""

    def __init__(self, thread_name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.poll()

    def poll(self) -> None:
        raise NotImplementedError


def hpa_control_plane(
    binaries: Binaries, workdir: Path, *, pod_ready_delay_s: float, hpa_sync_period_s: int
) -> ControlPlane:
    """The control plane of a KEDA chain: pods ready after a delay, KEDA's metrics adapter
    reached directly (no aggregator routing), and an HPA that syncs every few seconds."""
    return ControlPlane(
        binaries,
        workdir=workdir,
        pod_ready_delay_ms=int(pod_ready_delay_s * 1000),
        aggregator_routing=False,
        controller_manager_args=[f"--horizontal-pod-autoscaler-sync-period={hpa_sync_period_s}s"],
    )
