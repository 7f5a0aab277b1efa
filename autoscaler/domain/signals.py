"""What a target's series measure, and one step of them as the engine observed it.

A series that our own replicas shape is not demand: completions cannot exceed the
capacity provided, a queue drains when replicas arrive, and a utilisation is a share
of the replicas running. Each query a target names is therefore typed by what it
measures, and `autoscaler.demand` turns one step of them (with the replica count
observed at that step) into offered demand before any model sees it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class SignalKind(enum.StrEnum):
    """What one query measures."""

    ARRIVALS = "arrivals"
    """Offered load: requests (or tokens) per second arriving, whatever the replicas."""
    COMPLETIONS = "completions"
    """Throughput: requests (or tokens) per second finished; capped by the capacity provided."""
    WAITING = "waiting"
    """Backlog: requests queued and not yet started, summed over pods."""
    RUNNING = "running"
    """In flight: requests being served, summed over pods."""
    UTILIZATION = "utilization"
    """A per-replica fraction 0-1 (KV-cache, GPU memory, busy), averaged over ready pods."""
    PODS = "pods"
    """How many pods the sums above covered (a `count` beside each `sum`), so a pod
    whose scrape is missing reads as missing data rather than as lower demand."""


class ReplicaSource(enum.StrEnum):
    """Where the engine reads the scale target's replica counts each step."""

    KUBERNETES = "kubernetes"
    """The Deployment's or StatefulSet's status (ready and desired), via the API server."""
    PROMETHEUS = "prometheus"
    """A PromQL query of kube-state-metrics returning the ready replicas."""
    NONE = "none"
    """Not read: planning falls back to the replicas last reported, or to minReplicas."""


@dataclass(frozen=True, slots=True)
class SignalQuery:
    """One PromQL query of a target and what it measures."""

    kind: SignalKind
    query: str


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """The scale target's replicas as observed (never our own last plan)."""

    ready: int
    desired: int | None = None


@dataclass(frozen=True, slots=True)
class StepSignals:
    """Everything observed for one target at one step.

    A kind absent from `values`, or NaN there, was not observed at this step; it is
    never read as zero. `replicas` is None when no replica source answered.
    """

    timestamp: float
    values: Mapping[SignalKind, float] = field(default_factory=dict)
    replicas: ReplicaCounts | None = None
