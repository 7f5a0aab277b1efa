"""The reactive answer KEDA and the HPA would give for the latest value.

The predictive plan is never below this answer, and it is the whole plan during cold
start. Rules follow the HPA: a usage ratio within `tolerance` of 1 keeps the current
replica count (no flapping on noise); otherwise the count is recomputed and clamped to
[min, max]. A missing (NaN) value keeps the current count, as the HPA does when a
metric is unavailable.
"""

from __future__ import annotations

import math

from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import MetricKind

HPA_TOLERANCE = 0.1


def clamp_replicas(replicas: int, *, min_replicas: int, max_replicas: int) -> int:
    return max(min_replicas, min(max_replicas, replicas))


def replicas_for_demand(demand: float, capacity_per_replica: float) -> int:
    """Replicas that serve `demand`; a tiny epsilon keeps exact multiples from rounding up."""
    if demand <= 0:
        return 0
    return math.ceil(demand / capacity_per_replica - 1e-9)


def _within_tolerance(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1.0) <= tolerance


def reactive_load(
    *,
    demand: float,
    capacity_per_replica: float,
    current_replicas: int,
    min_replicas: int,
    max_replicas: int,
    tolerance: float = HPA_TOLERANCE,
) -> tuple[int, str]:
    """ceil(demand / capacity), unless demand is within tolerance of current capacity."""
    if math.isnan(demand):
        kept = clamp_replicas(current_replicas, min_replicas=min_replicas, max_replicas=max_replicas)
        return kept, f"no current value; keeping {kept} replicas"
    if current_replicas > 0:
        ratio = demand / (current_replicas * capacity_per_replica)
        if _within_tolerance(ratio, tolerance):
            kept = clamp_replicas(current_replicas, min_replicas=min_replicas, max_replicas=max_replicas)
            return kept, (
                f"demand {demand:.4g} is within {tolerance:.0%} of {current_replicas} replicas' capacity; "
                f"keeping {kept}"
            )
    raw = replicas_for_demand(demand, capacity_per_replica)
    replicas = clamp_replicas(raw, min_replicas=min_replicas, max_replicas=max_replicas)
    return replicas, (
        f"demand {demand:.4g} needs {raw} replicas (capacity {capacity_per_replica:.4g}/replica)"
        + _clamp_note(raw, replicas)
    )


def reactive_utilisation(
    *,
    value: float,
    target: float,
    current_replicas: int,
    min_replicas: int,
    max_replicas: int,
    tolerance: float = HPA_TOLERANCE,
) -> tuple[int, str]:
    """ceil(current * value / target), unless value / target is within tolerance of 1."""
    current = max(current_replicas, 1)
    if math.isnan(value):
        kept = clamp_replicas(current_replicas, min_replicas=min_replicas, max_replicas=max_replicas)
        return kept, f"no current value; keeping {kept} replicas"
    ratio = value / target
    if _within_tolerance(ratio, tolerance):
        kept = clamp_replicas(current_replicas, min_replicas=min_replicas, max_replicas=max_replicas)
        return kept, f"utilisation {value:.4g} is within {tolerance:.0%} of target {target:.4g}; keeping {kept}"
    raw = max(0, math.ceil(current * ratio - 1e-9))
    replicas = clamp_replicas(raw, min_replicas=min_replicas, max_replicas=max_replicas)
    return replicas, (
        f"utilisation {value:.4g} against target {target:.4g} on {current} replicas needs {raw}"
        + _clamp_note(raw, replicas)
    )


def reactive_replicas(spec: ScalerSpec, *, latest_value: float, current_replicas: int) -> tuple[int, str]:
    """The reactive answer for a target, dispatched on its metric kind."""
    if spec.metric_kind is MetricKind.UTILISATION:
        return reactive_utilisation(
            value=latest_value,
            target=spec.capacity_per_replica,
            current_replicas=current_replicas,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
        )
    return reactive_load(
        demand=latest_value,
        capacity_per_replica=spec.capacity_per_replica,
        current_replicas=current_replicas,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
    )


def _clamp_note(raw: int, replicas: int) -> str:
    if raw == replicas:
        return ""
    bound = "minReplicas" if replicas > raw else "maxReplicas"
    return f", clamped to {bound} {replicas}"
