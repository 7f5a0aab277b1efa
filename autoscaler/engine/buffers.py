"""One node buffer for the triggers that scale one workload.

A ScaledObject with several triggers (several of ours, or ours beside KEDA's own) has
one HPA, and the HPA runs the largest replica count that any trigger asks for. So the
pods that keep nodes warm are the largest need at the node lead time over the triggers
minus the replicas the HPA will run: the largest plan, or the desired replicas observed
on the workload when a trigger that is not ours asks for more. The largest buffer of
any one trigger is not that: a trigger whose own plan is small asks for headroom that
another trigger's larger plan already runs, and its placeholders would keep GPU nodes
warm for nothing.

Pure: no I/O, no clock. docs/prewarming.md has the rule and a worked example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.domain.snapshot import TargetSnapshot
from autoscaler.domain.types import Decision, TargetKey
from autoscaler.planner.reactive import replicas_for_demand


@dataclass(frozen=True, slots=True)
class TriggerNeed:
    """What one trigger plans now and needs at its node lead time, in replicas."""

    key: TargetKey
    replicas: int
    node_replicas: int
    max_buffer_replicas: int
    max_replicas: int


@dataclass(frozen=True, slots=True)
class CombinedBuffer:
    replicas: int
    reason: str


def trigger_need(target: TargetSnapshot, decision: Decision) -> TriggerNeed:
    """The replicas a trigger needs at its node lead time.

    Its plan plus its buffer, or, where maxBufferReplicas cut the buffer, the replicas
    that serve its forecast at the node lead time.
    """
    spec = target.spec
    forecast = decision.forecast_at_node_lead
    forecast_need = replicas_for_demand(forecast, spec.capacity_per_replica) if math.isfinite(forecast) else 0
    return TriggerNeed(
        key=target.key,
        replicas=decision.replicas,
        node_replicas=max(decision.replicas + decision.buffer_replicas, forecast_need),
        max_buffer_replicas=spec.max_buffer_replicas,
        max_replicas=spec.max_replicas,
    )


def combined_buffer(triggers: Sequence[TriggerNeed], *, observed_desired: int | None = None) -> CombinedBuffer:
    """The workload's buffer: the largest need minus the largest plan (or the desired
    replicas observed, when more), at most the smallest maxBufferReplicas of the
    triggers and the room left under the largest maxReplicas."""
    if not triggers:
        raise ValueError("a buffer needs at least one trigger")
    need = max(triggers, key=lambda trigger: trigger.node_replicas)
    planner = max(triggers, key=lambda trigger: trigger.replicas)
    plan, plan_source = planner.replicas, f"{planner.key}'s plan"
    if observed_desired is not None and observed_desired > plan:
        plan, plan_source = observed_desired, "the desired replicas observed (another trigger asks for more)"
    cap = min(trigger.max_buffer_replicas for trigger in triggers)
    room = max(trigger.max_replicas for trigger in triggers) - plan
    replicas = max(0, min(need.node_replicas - plan, cap, room))
    reason = (
        f"{need.node_replicas} replicas needed at the node lead time ({need.key}) minus {plan} run "
        f"({plan_source}) = {need.node_replicas - plan}"
    )
    if replicas < need.node_replicas - plan:
        reason += f", capped at {replicas} (maxBufferReplicas {cap}, room under maxReplicas {room})"
    return CombinedBuffer(replicas=replicas, reason=reason)
