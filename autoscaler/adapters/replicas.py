"""The scale target's replicas as the Kubernetes API reports them, read every step.

One `get` on the Deployment or StatefulSet (apps/v1) per target and step: `spec.replicas`
is what the HPA last set (desired) and `status.readyReplicas` what serves now (ready).
The daemon's role needs `get` on `deployments` and `statefulsets` in the apps group
(docs/deploy.md; the chart's ClusterRole grants it). The answer is parsed for those two
fields only: deserialising the whole object into the client's models costs far more
than the request, once a step for every target.

The client is synchronous, so each read runs in a worker thread. Errors are
`ReplicaReadError`, naming the workload, with the cause chained.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from autoscaler.domain.signals import ReplicaCounts

READ_TIMEOUT_SECONDS = 5.0


class ReplicaReadError(RuntimeError):
    """The workload's replicas could not be read; the message names it."""


class KubeReplicaReader:
    """Reads ready and desired replicas of Deployments and StatefulSets."""

    def __init__(self, api_client: ApiClient, *, timeout_seconds: float = READ_TIMEOUT_SECONDS) -> None:
        apps = client.AppsV1Api(api_client)
        self._readers: dict[str, Callable[..., Any]] = {
            "Deployment": apps.read_namespaced_deployment,
            "StatefulSet": apps.read_namespaced_stateful_set,
        }
        self._timeout = timeout_seconds

    async def read(self, *, namespace: str, kind: str, name: str) -> ReplicaCounts:
        return await asyncio.to_thread(self._read, namespace, kind, name)

    def _read(self, namespace: str, kind: str, name: str) -> ReplicaCounts:
        workload = f"{kind} {namespace}/{name}"
        reader = self._readers.get(kind)
        if reader is None:
            raise ReplicaReadError(f"{workload}: kind must be one of {', '.join(self._readers)}")
        try:
            response = reader(name, namespace, _preload_content=False, _request_timeout=self._timeout)
            body = json.loads(response.data)
        except ApiException as error:
            raise ReplicaReadError(f"{workload}: HTTP {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ReplicaReadError(f"{workload}: request failed: {type(error).__name__}: {error}") from error
        except ValueError as error:
            raise ReplicaReadError(f"{workload}: the answer is not JSON") from error
        return replica_counts(body, workload=workload)


def replica_counts(body: Any, *, workload: str) -> ReplicaCounts:
    """Ready and desired replicas from an apps/v1 Deployment or StatefulSet as JSON.

    The API server leaves `readyReplicas` out while it is 0; `spec.replicas` defaults to 1.
    """
    spec = body.get("spec") if isinstance(body, dict) else None
    if not isinstance(spec, dict):
        raise ReplicaReadError(f"{workload}: the answer has no spec")
    status = body.get("status") or {}
    ready = _count(status.get("readyReplicas", 0) if isinstance(status, dict) else None)
    desired = _count(spec.get("replicas", 1))
    if ready is None or desired is None:
        raise ReplicaReadError(f"{workload}: status.readyReplicas or spec.replicas is not a count")
    return ReplicaCounts(ready=ready, desired=desired)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
