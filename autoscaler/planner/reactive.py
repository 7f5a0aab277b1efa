"""The reactive answer KEDA and the HPA would give for the latest value.

The predictive plan is never below this answer, and it is the whole plan during cold
start. Rules follow the HPA: a usage ratio within `tolerance` of 1 keeps the current
replica count (no flapping on noise); otherwise the count is recomputed and clamped to
[min, max]. A missing (NaN) value keeps the current count, as the HPA does when a
metric is unavailable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from autoscaler.domain.signals import SignalKind
from autoscaler.domain.spec import ScalerSpec

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


def reactive_on_signals(
    spec: ScalerSpec, *, values: Mapping[SignalKind, float], ready: int, current_replicas: int
) -> tuple[int, str]:
    """What KEDA and the HPA answer with one trigger per raw series of the target (the largest).

    Load series (arrivals, completions) use the AverageValue rule with capacityPerReplica;
    a utilisation the HPA's ceil(ready x utilisation / target); a queue the AverageValue
    rule with the backlog one replica drains within drainTime as its per-replica target.
    In-flight counts and the pods count are not scaled on. A series missing at this step
    keeps the current replicas, as the HPA does.
    """
    bounds = {"min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas}
    answers: list[tuple[int, str]] = []
    for kind in (SignalKind.ARRIVALS, SignalKind.COMPLETIONS):
        if kind in spec.signal_kinds:
            replicas, reason = reactive_load(
                demand=values.get(kind, math.nan),
                capacity_per_replica=spec.capacity_per_replica,
                current_replicas=current_replicas,
                **bounds,
            )
            answers.append((replicas, f"{kind.value}: {reason}"))
    if SignalKind.UTILIZATION in spec.signal_kinds and spec.target_utilization is not None:
        replicas, reason = reactive_utilisation(
            value=values.get(SignalKind.UTILIZATION, math.nan),
            target=spec.target_utilization,
            current_replicas=ready,
            **bounds,
        )
        answers.append((replicas, reason))
    if SignalKind.WAITING in spec.signal_kinds:
        replicas, reason = reactive_load(
            demand=values.get(SignalKind.WAITING, math.nan),
            capacity_per_replica=spec.capacity_per_replica * spec.drain_time_seconds,
            current_replicas=current_replicas,
            **bounds,
        )
        answers.append((replicas, f"waiting: {reason}"))
    if not answers:
        kept = clamp_replicas(current_replicas, **bounds)
        return kept, f"no series to scale on; keeping {kept}"
    return max(answers, key=lambda answer: answer[0])


def _clamp_note(raw: int, replicas: int) -> str:
    if raw == replicas:
        return ""
    bound = "minReplicas" if replicas > raw else "maxReplicas"
    return f", clamped to {bound} {replicas}"
