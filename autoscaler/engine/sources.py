"""Where the engine reads from: metrics from Prometheus (a replayed trace in the demo), and
the scale target's replica counts from the Kubernetes API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from autoscaler.domain.signals import ReplicaCounts


class SampleLike(Protocol):
    @property
    def value(self) -> float: ...

    @property
    def timestamp(self) -> float: ...


class MetricSource(Protocol):
    async def instant(self, query: str, *, at: float) -> SampleLike | None:
        """The query's single value at `at`, or None when there is no data.

        The sample's timestamp is the evaluation time `at`, not the age of the data.
        """
        ...

    async def newest_sample_at(self, queries: Sequence[str], *, at: float) -> float | None:
        """When the newest raw sample behind the stalest input of `queries` was taken, or
        None when unknown (then the answer's own time is all there is)."""
        ...

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        """(timestamp, value) pairs over [start, end] on the step grid; gaps are absent."""
        ...

    async def close(self) -> None: ...


class ReplicaReader(Protocol):
    async def read(self, *, namespace: str, kind: str, name: str) -> ReplicaCounts:
        """The workload's ready and desired replicas now; raises when they cannot be read."""
        ...
