"""A deterministic cluster model shared by `backtest` and `simulate`.

Each step starts at time `now`, when a policy asks for `desired` replicas and `buffer`
placeholder replicas; the step's demand is then served by the replicas ready at `now`.

- Nodes hold `pods_per_node` pods. The cluster keeps ceil((desired + buffer) / K)
  nodes: a missing node is requested at once and is ready `node_startup` later.
  Placeholders are preempted by real pods, so a node they keep warm is room.
- Pods pack into nodes in order of the nodes' ready time: new pod number k (counting
  the replicas already running) lands on node k // K and is ready `pod_startup` after
  that node is ready (or after now, if it already is). So a pod on a warm node takes
  P, a pod that needs a new node N + P.
- A pod counts as ready for a step only if it was ready at the step's start; with a
  step longer than P, a pod asked for at step t serves from step t + 1.
- Scale-down removes pods at once, newest (least ready) first, as a ReplicaSet does.
  A node that has been surplus for `node_removal_delay` (the cluster autoscaler's
  scale-down-unneeded-time, 10 minutes by default) is removed, newest first.
- served = min(demand, ready replicas x capacity). Costs count every pod and node that
  exists during the step, ready or not, because both are paid for while starting.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

READY_EPSILON = 1e-6
DEFAULT_NODE_REMOVAL_DELAY = 600.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    capacity_per_replica: float
    pod_startup_seconds: float
    node_startup_seconds: float
    pods_per_node: int
    node_removal_delay_seconds: float = DEFAULT_NODE_REMOVAL_DELAY

    def __post_init__(self) -> None:
        if self.capacity_per_replica <= 0 or self.pods_per_node <= 0:
            raise ValueError("capacity_per_replica and pods_per_node must be positive")
        if self.pod_startup_seconds < 0 or self.node_startup_seconds < 0 or self.node_removal_delay_seconds < 0:
            raise ValueError("startup and removal times must not be negative")


@dataclass(slots=True)
class ClusterTotals:
    """Running totals over the steps simulated so far."""

    steps: int = 0
    demand: float = 0.0
    unserved: float = 0.0
    steps_short: int = 0
    replica_steps: int = 0
    node_steps: int = 0

    @property
    def unserved_share(self) -> float:
        return self.unserved / self.demand if self.demand > 0 else 0.0

    @property
    def short_share(self) -> float:
        return self.steps_short / self.steps if self.steps else 0.0


@dataclass(frozen=True, slots=True)
class StepOutcome:
    ready_replicas: int
    replicas: int
    nodes: int
    served: float
    unserved: float


@dataclass(slots=True)
class _Node:
    ready_at: float
    surplus_since: float | None = None


@dataclass(slots=True)
class Cluster:
    """Pods and nodes of one workload; call `step` once per trace row, in time order."""

    config: ClusterConfig
    initial_replicas: int
    totals: ClusterTotals = field(default_factory=ClusterTotals)
    _pod_ready_at: list[float] = field(default_factory=list)
    _nodes: list[_Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pod_ready_at = [-math.inf] * self.initial_replicas
        node_count = math.ceil(self.initial_replicas / self.config.pods_per_node)
        self._nodes = [_Node(ready_at=-math.inf) for _ in range(node_count)]

    @property
    def replicas(self) -> int:
        """Replicas that exist (ready or starting): the HPA's current replica count."""
        return len(self._pod_ready_at)

    @property
    def nodes(self) -> int:
        return len(self._nodes)

    def step(self, *, now: float, demand: float, desired_replicas: int, buffer_replicas: int) -> StepOutcome:
        desired = max(0, desired_replicas)
        del self._pod_ready_at[desired:]
        self._reconcile_nodes(now, desired + max(0, buffer_replicas))
        per_node = self.config.pods_per_node
        for slot in range(len(self._pod_ready_at), desired):
            node_ready = self._nodes[slot // per_node].ready_at
            bisect.insort(self._pod_ready_at, max(now, node_ready) + self.config.pod_startup_seconds)
        ready = bisect.bisect_right(self._pod_ready_at, now + READY_EPSILON)
        capacity = ready * self.config.capacity_per_replica
        served = min(demand, capacity)
        unserved = demand - served
        totals = self.totals
        totals.steps += 1
        totals.demand += demand
        totals.unserved += unserved
        totals.steps_short += 1 if unserved > READY_EPSILON * max(1.0, demand) else 0
        totals.replica_steps += len(self._pod_ready_at)
        totals.node_steps += len(self._nodes)
        return StepOutcome(
            ready_replicas=ready,
            replicas=len(self._pod_ready_at),
            nodes=len(self._nodes),
            served=served,
            unserved=unserved,
        )

    def _reconcile_nodes(self, now: float, pods: int) -> None:
        """Add missing nodes now; remove nodes surplus for longer than the removal delay."""
        needed = math.ceil(pods / self.config.pods_per_node)
        for _ in range(needed - len(self._nodes)):
            self._nodes.append(_Node(ready_at=now + self.config.node_startup_seconds))
        for index, node in enumerate(self._nodes):
            if index < needed:
                node.surplus_since = None
            elif node.surplus_since is None:
                node.surplus_since = now
        delay = self.config.node_removal_delay_seconds
        while (
            len(self._nodes) > needed
            and (since := self._nodes[-1].surplus_since) is not None
            and now - since >= delay - READY_EPSILON
        ):
            self._nodes.pop()
