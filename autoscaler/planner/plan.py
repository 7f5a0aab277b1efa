"""The planner: (now, spec, latest value, forecast, calibration, state) -> Decision.

Pure. The order of rules, each visible in the reason:

1. Need at the lead time: the calibrated quantile (forecast at the nominal level
   `spec.target_coverage` plus the calibrator's offset) at forecast step lead+1, the
   first step a pod asked for now can serve (step 1 starts now). Asking for more to
   cover steps 1..lead would only add pods that arrive too late; but scale-down acts at
   once, so the plan keeps up to the current replicas for the need over steps 1..lead.
   Demand is offered demand (autoscaler.demand), so the need is ceil(need / capacity)
   whatever the target measures: a utilisation was already turned into demand units.
2. Safety terms, never forecast (`SafetyTerms`): the plan is at least `floor` (the
   replicas held while demand is only a lower bound or pods are missing), and the
   replicas that drain the current backlog within drainTime are added on top.
   Never below the reactive answers: on the latest demand, and KEDA/HPA's on the
   target's raw series; clamped to [minReplicas, maxReplicas].
3. Scale-down is damped: never below the highest recommendation within the
   stabilisation window, and never more than `scaleDownPercentPerMinute` of the current
   replicas per elapsed minute.
4. Node buffer: the highest need over forecast steps lead+1 .. (lead + node lead)+1
   minus the replicas planned, or the priced headroom for unannounced bursts
   (autoscaler.planner.headroom) where that is more, at least 0, capped at
   maxBufferReplicas and at the room left under maxReplicas. Measured from the replicas
   planned (not the need at the lead time) because replicas held by damping already
   keep their nodes.
5. Whole nodes: with podsPerNode > 1, replicas take the pod slots left free on the
   nodes the plan needs anyway (replicas + buffer, rounded up to whole nodes). Those
   nodes are paid for either way; a ready replica in a free slot serves a surge at
   once, where an empty slot would need a pod startup first.

Without a usable forecast (cold start, failed fit) the decision is the reactive answer,
damped by rule 3 like any other plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import Decision, FloatArray, Forecast
from autoscaler.planner.headroom import BurstModel, burst_headroom
from autoscaler.planner.reactive import clamp_replicas, reactive_load, replicas_for_demand


@dataclass(frozen=True, slots=True)
class PlannerState:
    """Raw recommendations (time, replicas) inside the stabilisation window, newest last."""

    recommendations: tuple[tuple[float, int], ...] = ()
    last_decided_at: float | None = None
    rate_floor: float | None = None
    """The unrounded floor of the scale-down rate limit at the last decision of a
    scale-down still under way, which the next one counts down from. Counted from each
    step's current replicas instead, every short step's share rounded back up to no
    change at all (50 %/min at 10 s steps held 8 replicas for ever)."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """The calibrator's answer for this decision: its level and the offset in metric units."""

    level: float
    offset: float


@dataclass(frozen=True, slots=True)
class SafetyTerms:
    """The reactive terms of one decision, computed from the latest observed step."""

    drain_replicas: int = 0
    """Replicas that drain the current backlog within drainTime, added on top of the need."""
    drain_reason: str = ""
    floor: int = 0
    """The plan is at least this: replicas held while demand is a lower bound or pods are missing."""
    floor_reason: str = ""
    """Shown in the reason whenever set, binding or not."""
    series_reactive: tuple[int, str] | None = None
    """KEDA/HPA's answer on the target's raw series; None: the demand answer stands alone."""


NO_SAFETY = SafetyTerms()


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%H:%M:%S")


def _replicas_for(spec: ScalerSpec, value: float) -> int:
    return replicas_for_demand(value, spec.capacity_per_replica)


def _reactive(
    spec: ScalerSpec, *, latest_value: float, current_replicas: int, safety: SafetyTerms
) -> tuple[int | None, int, str]:
    """(answer on the latest demand or None when unknown, the reactive floor, its reason)."""
    demand_answer, demand_reason = reactive_load(
        demand=latest_value,
        capacity_per_replica=spec.capacity_per_replica,
        current_replicas=current_replicas,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
    )
    series = safety.series_reactive
    if series is None:
        return demand_answer, demand_answer, demand_reason
    if math.isnan(latest_value):
        return None, series[0], f"KEDA/HPA on the series: {series[1]}"
    if series[0] > demand_answer:
        return demand_answer, series[0], f"KEDA/HPA on the series: {series[1]}"
    return demand_answer, demand_answer, demand_reason


def _with_safety(spec: ScalerSpec, *, need: int | None, reactive: int, safety: SafetyTerms) -> tuple[int, str]:
    """max(max(need, floor) + drain, reactive), clamped; the note names the rules that bound it."""
    held = max(need or 0, safety.floor)
    notes = ""
    if safety.floor_reason:
        notes += f"; {safety.floor_reason}"
    if safety.drain_replicas > 0:
        notes += f"; +{safety.drain_replicas} {safety.drain_reason}"
    raw = max(held + safety.drain_replicas, reactive)
    clamped = clamp_replicas(raw, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas)
    if clamped != raw:
        notes += f"; clamped to {clamped}"
    return clamped, notes


def damp(
    *,
    now: float,
    raw: int,
    current_replicas: int,
    state: PlannerState,
    stabilization_seconds: float,
    percent_per_minute: float | None,
) -> tuple[int, str, PlannerState]:
    """Apply the stabilisation window and the scale-down rate limit to a raw recommendation.

    `percent_per_minute` None means no rate limit (the HPA's default policy removes up
    to 100% every 15 s, which never binds after the window).
    """
    window_start = now - stabilization_seconds
    kept = tuple(entry for entry in state.recommendations if entry[0] > window_start)
    recommendations = (*kept, (now, raw))
    held_at, held = max(recommendations, key=lambda entry: (entry[1], entry[0]))
    replicas, note = raw, ""
    if held > raw:
        replicas = held
        note = f"; holding {held} within scale-down window until {_clock(held_at + stabilization_seconds)}"
    rate_floor = None
    if percent_per_minute is not None and replicas < current_replicas and state.last_decided_at is not None:
        elapsed = max(0.0, now - state.last_decided_at)
        share = min(1.0, percent_per_minute / 100.0 * elapsed / 60.0)
        counted_from = float(current_replicas) if state.rate_floor is None else min(current_replicas, state.rate_floor)
        # Kept while the scale-down lasts, bound or not: counted from the current replicas
        # again, a plan that reached its target while the HPA still held replicas (its own
        # window) jumped back up, and the HPA's window never saw it low.
        rate_floor = counted_from * (1.0 - share)
        floor = math.ceil(rate_floor - 1e-9)
        if floor > replicas:
            replicas = floor
            note += f"; scale-down limited to {percent_per_minute:g}%/min, so {floor}"
    return replicas, note, PlannerState(recommendations=recommendations, last_decided_at=now, rate_floor=rate_floor)


def _reactive_only(
    *,
    now: float,
    spec: ScalerSpec,
    demand_answer: int | None,
    reactive: int,
    reactive_reason: str,
    why: str,
    current_replicas: int,
    state: PlannerState,
    safety: SafetyTerms,
) -> tuple[Decision, PlannerState]:
    """The reactive answer, damped like any plan so leaving and entering cold start is smooth."""
    raw, safety_note = _with_safety(spec, need=demand_answer, reactive=reactive, safety=safety)
    replicas, damping_note, new_state = _damp_for(
        spec, now=now, raw=raw, current_replicas=current_replicas, state=state
    )
    decision = Decision(
        replicas=replicas,
        reactive_replicas=reactive,
        buffer_replicas=0,
        reason=f"{why}; reactive answer: {reactive_reason}{safety_note}{damping_note}",
        forecast_at_lead=math.nan,
        forecast_at_node_lead=math.nan,
        quantile_level=spec.target_coverage,
        predictive=False,
    )
    return decision, new_state


def _damp_for(
    spec: ScalerSpec, *, now: float, raw: int, current_replicas: int, state: PlannerState
) -> tuple[int, str, PlannerState]:
    damped, note, new_state = damp(
        now=now,
        raw=raw,
        current_replicas=current_replicas,
        state=state,
        stabilization_seconds=spec.scale_down_stabilization_seconds,
        percent_per_minute=spec.scale_down_percent_per_minute,
    )
    return clamp_replicas(damped, min_replicas=spec.min_replicas, max_replicas=spec.max_replicas), note, new_state


def calibrated_path(forecast: Forecast, *, level: float, offset: float) -> FloatArray:
    """The forecast quantile at `level` plus `offset`, floored at zero, per forecast step."""
    return np.maximum(forecast.quantile(level) + offset, 0.0)


def plan(
    *,
    now: float,
    spec: ScalerSpec,
    latest_value: float,
    forecast: Forecast | None,
    calibration: Calibration,
    current_replicas: int,
    state: PlannerState,
    cold_start: str | None = None,
    safety: SafetyTerms = NO_SAFETY,
    bursts: BurstModel | None = None,
) -> tuple[Decision, PlannerState]:
    """Decide the replicas and node buffer for `now`.

    `latest_value` is the latest offered demand (NaN when unknown). `cold_start`, when
    given, says why the history cannot support a forecast yet; the decision is then the
    reactive answer with that reason.
    """
    demand_answer, reactive, reactive_reason = _reactive(
        spec, latest_value=latest_value, current_replicas=current_replicas, safety=safety
    )

    def reactive_only(why: str) -> tuple[Decision, PlannerState]:
        return _reactive_only(
            now=now,
            spec=spec,
            demand_answer=demand_answer,
            reactive=reactive,
            reactive_reason=reactive_reason,
            why=why,
            current_replicas=current_replicas,
            state=state,
            safety=safety,
        )

    if forecast is None or cold_start is not None:
        return reactive_only(cold_start or "no forecast available")
    path = calibrated_path(forecast, level=spec.target_coverage, offset=calibration.offset)
    lead_span = min(spec.lead_steps + 1, forecast.horizon)
    node_span = min(spec.node_lead_steps + 1, forecast.horizon)
    if lead_span == 0 or not np.all(np.isfinite(path[:node_span])):
        return reactive_only(f"forecast from {forecast.model} is not finite")
    need_at_lead = float(path[lead_span - 1])
    need_at_node_lead = float(path[lead_span - 1 : node_span].max())
    predicted = _replicas_for(spec, need_at_lead)
    hold = min(current_replicas, _replicas_for(spec, float(path[:lead_span].max())))
    hold_note = ""
    if hold > predicted:
        predicted = hold
        hold_note = f"; keeping {hold} for the demand forecast before then"
    raw, safety_note = _with_safety(spec, need=predicted, reactive=reactive, safety=safety)
    replicas, damping_note, new_state = _damp_for(
        spec, now=now, raw=raw, current_replicas=current_replicas, state=state
    )
    node_need = _replicas_for(spec, need_at_node_lead) + safety.drain_replicas
    headroom = burst_headroom(bursts, now=now, spec=spec)
    wanted = max(node_need - replicas, headroom.replicas)
    for_bursts = headroom.replicas > node_need - replicas
    buffer = max(0, min(wanted, spec.max_buffer_replicas, spec.max_replicas - replicas))
    replicas, fill_note = _fill_nodes(spec, replicas=replicas, buffer=buffer)
    reason = (
        f"forecast p{spec.target_coverage * 100:g} ({forecast.model}, calibrated {calibration.offset:+.4g}) "
        f"of {need_at_lead:.4g} at +{spec.lead_time_seconds:g}s needs {predicted} replicas "
        f"(capacity {spec.capacity_per_replica:.4g}/replica); reactive needs {reactive}"
        f"{hold_note}{safety_note}{damping_note}{fill_note}"
    )
    if buffer > 0 and for_bursts:
        capped = f" (capped from {headroom.replicas})" if buffer < headroom.replicas else ""
        reason += f"; {buffer} placeholder replicas{capped} {headroom.reason}"
    elif buffer > 0:
        reason += (
            f"; {buffer} placeholder replicas keep nodes warm for {need_at_node_lead:.4g} "
            f"at +{spec.lead_time_seconds + spec.node_lead_time_seconds:g}s"
        )
    decision = Decision(
        replicas=replicas,
        reactive_replicas=reactive,
        buffer_replicas=buffer,
        reason=reason,
        forecast_at_lead=need_at_lead,
        forecast_at_node_lead=need_at_node_lead,
        quantile_level=calibration.level,
        predictive=True,
    )
    return decision, new_state


def _fill_nodes(spec: ScalerSpec, *, replicas: int, buffer: int) -> tuple[int, str]:
    """Use the free pod slots of the nodes the plan already pays for (rule 5)."""
    nodes = math.ceil((replicas + buffer) / spec.pods_per_node)
    filled = min(spec.max_replicas, nodes * spec.pods_per_node - buffer)
    if filled <= replicas:
        return replicas, ""
    return filled, f"; {filled} replicas fill the {nodes} nodes of {spec.pods_per_node} pods it needs"
