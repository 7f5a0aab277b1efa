"""What the services may ask of the engine: read snapshots, register targets, wait.

Services depend on this protocol, not on the engine class, so they are tested with a
small fake engine at this seam as well as with the real one.
"""

from __future__ import annotations

from typing import Protocol

from autoscaler.domain.snapshot import EngineSnapshot, TargetSnapshot
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import TargetKey


class UnknownEndpointError(LookupError):
    """Metadata named a Prometheus endpoint the daemon's configuration does not define."""

    def __init__(self, endpoint: str, known: list[str]) -> None:
        super().__init__(
            f"scalerMetadata key 'prometheus': endpoint {endpoint!r} is not configured; "
            f"configured: {', '.join(known) or '(none)'}"
        )
        self.key = "prometheus"
        self.endpoint = endpoint


class NoKubernetesAccessError(UnknownEndpointError):
    """Metadata asked for replicaSource kubernetes, but the daemon has no Kubernetes API client
    (no in-cluster service account and no kubeconfig)."""

    def __init__(self) -> None:
        LookupError.__init__(
            self,
            "scalerMetadata key 'replicaSource': kubernetes needs the daemon to reach the Kubernetes API, "
            "and it has no in-cluster service account or kubeconfig; use replicaSource prometheus with a "
            "replicasQuery",
        )
        self.key = "replicaSource"
        self.endpoint = "kubernetes"


class EngineView(Protocol):
    def snapshot(self) -> EngineSnapshot:
        """The latest published snapshot; O(1), never blocks."""
        ...

    def ensure_target(self, key: TargetKey, spec: ScalerSpec) -> None:
        """Register a target on first contact (idempotent, non-blocking).

        Raises UnknownEndpointError when spec.prometheus is not configured, and its
        NoKubernetesAccessError when spec reads replicas from an API the daemon cannot reach.
        The engine warm-starts and plans it in the background.
        """
        ...

    async def wait_for_target(self, key: TargetKey, timeout: float) -> TargetSnapshot | None:
        """Wait until the target has a published snapshot that is not WARMING, or timeout."""
        ...

    async def wait_next(self, generation: int, timeout: float) -> EngineSnapshot:
        """Wait until a snapshot newer than `generation` is published, or timeout."""
        ...
