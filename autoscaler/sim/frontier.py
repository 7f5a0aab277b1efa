"""The cost frontier: our policy over a sweep of coverage targets, against the baselines.

Each target gives one point (node-steps paid, share of demand unserved). The frontier
is the points no other point beats on both; between two of them a setting in between
is assumed to land on the straight line, which is what `unserved_at_cost` reads off.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.sim.cluster import ClusterTotals

SWEEP_TARGETS = (0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """One run's outcome: ours at `target_coverage`, or a baseline (target None)."""

    policy: str
    target_coverage: float | None
    node_steps: int
    unserved_share: float
    steps_short_share: float
    replica_steps: int

    @classmethod
    def of(cls, policy: str, totals: ClusterTotals, target_coverage: float | None = None) -> FrontierPoint:
        return cls(
            policy=policy,
            target_coverage=target_coverage,
            node_steps=totals.node_steps,
            unserved_share=totals.unserved_share,
            steps_short_share=totals.short_share,
            replica_steps=totals.replica_steps,
        )


def pareto_front(points: Sequence[FrontierPoint]) -> list[FrontierPoint]:
    """The points no other point beats on both cost and unserved demand, cheapest first."""
    front: list[FrontierPoint] = []
    for point in sorted(points, key=lambda p: (p.node_steps, p.unserved_share)):
        if not front or point.unserved_share < front[-1].unserved_share:
            front.append(point)
    return front


def unserved_at_cost(points: Sequence[FrontierPoint], node_steps: float) -> float | None:
    """Unserved share on the frontier at this cost, linear between its points.

    None when the cost is below the cheapest point (no setting swept is that cheap);
    above the dearest point the dearest point's share holds (more cost buys no less).
    """
    front = pareto_front(points)
    if not front or node_steps < front[0].node_steps:
        return None
    for cheaper, dearer in itertools.pairwise(front):
        if node_steps <= dearer.node_steps:
            share = (node_steps - cheaper.node_steps) / (dearer.node_steps - cheaper.node_steps)
            return cheaper.unserved_share + share * (dearer.unserved_share - cheaper.unserved_share)
    return front[-1].unserved_share


def cheapest_reaching(points: Sequence[FrontierPoint], goal_unserved_share: float) -> FrontierPoint | None:
    """The cheapest swept setting that leaves at most `goal_unserved_share` of demand unserved."""
    reaching = [point for point in points if point.unserved_share <= goal_unserved_share]
    return min(reaching, key=lambda p: (p.node_steps, p.unserved_share), default=None)
