"""One step of observed signals (and the ready replicas) -> offered demand.

Pure: no I/O, no clock. The rules, in order of preference (docs/demand.md):

1. Arrivals, where they are measured: offered load needs no derivation.
2. Completions + the change in requests in the system (waiting + running) over the
   step, by conservation: what arrived either finished or is still there.
3. Utilisation x ready replicas: the busy share of the replicas, converted to demand
   units with the capacity one replica serves at the target utilisation.
4. Waiting alone measures no demand: a non-empty queue only says the replicas were
   saturated, an empty one only that they were not.

Demand that is censored is returned as a lower bound: a utilisation at or above
`saturation`, or completions at or above `saturation` of the ready replicas' capacity
(the replicas could not show more: `saturated`), a queue that exists (completions are
capped by capacity, and requests that gave up leave unseen), or fewer pods reporting
than are ready (sums miss the silent pods).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from autoscaler.domain.signals import SignalKind, StepSignals

DEFAULT_SATURATION = 0.95
UTILISATION_SOURCE = "utilisation x ready replicas"


@dataclass(frozen=True, slots=True)
class DemandUnits:
    """How signals convert into demand units (those of `capacity_per_replica`)."""

    capacity_per_replica: float
    target_utilization: float | None = None
    saturation: float = DEFAULT_SATURATION


@dataclass(frozen=True, slots=True)
class DemandEstimate:
    """Offered demand for one step; `value` NaN when the signals do not determine it."""

    value: float
    source: str
    lower_bound: bool = False
    note: str = ""
    missing_pods: int = 0
    """Ready pods that did not report (the `pods` count below the ready count)."""
    saturated: bool = False
    """The ready replicas ran at capacity: demand may be any amount above `value`."""

    @classmethod
    def at_saturation(cls, value: float, *, source: str, note: str) -> DemandEstimate:
        """Saturated replicas show only a lower bound: what they served, not what was offered."""
        return cls(value=value, source=source, lower_bound=True, note=note, saturated=True)

    def describe(self) -> str:
        if math.isnan(self.value):
            return f"demand unknown ({self.note or self.source})"
        bound = "at least " if self.lower_bound else ""
        note = f" ({self.note})" if self.note else ""
        return f"demand {bound}{self.value:.4g} from {self.source}{note}"


def finite(signals: StepSignals, kind: SignalKind) -> float | None:
    """The value of `kind` at this step, or None when absent or not finite."""
    value = signals.values.get(kind)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _in_system(signals: StepSignals) -> float | None:
    """Requests waiting plus running; None unless every measured part is finite."""
    parts = [finite(signals, kind) for kind in (SignalKind.WAITING, SignalKind.RUNNING) if kind in signals.values]
    if not parts or any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)


def _backlog_change_rate(step: StepSignals, previous: StepSignals | None) -> float | None:
    """Change in (waiting + running) per second since the previous step, same kinds both times."""
    if previous is None or step.timestamp <= previous.timestamp:
        return None
    kinds = {SignalKind.WAITING, SignalKind.RUNNING}
    if kinds & step.values.keys() != kinds & previous.values.keys():
        return None
    now, before = _in_system(step), _in_system(previous)
    if now is None or before is None:
        return None
    return (now - before) / (step.timestamp - previous.timestamp)


def missing_pods(step: StepSignals, ready: int | None) -> int:
    """Ready pods whose scrape is missing from this step's sums."""
    pods = finite(step, SignalKind.PODS)
    if pods is None or ready is None:
        return 0
    return max(0, ready - round(pods))


def derive_demand(
    step: StepSignals, previous: StepSignals | None, *, units: DemandUnits, ready: int | None
) -> DemandEstimate:
    """Offered demand for `step`; `previous` is the step before it (for the backlog change)."""
    missing = missing_pods(step, ready)
    estimate = _derive(step, previous, units=units, ready=ready)
    if not missing:
        return estimate
    # A utilisation is an average over the pods that reported, so it stays exact; a sum is short.
    short_sum = math.isfinite(estimate.value) and estimate.source != UTILISATION_SOURCE
    note = f"{missing} of {ready} ready pods did not report"
    return replace(
        estimate,
        lower_bound=estimate.lower_bound or short_sum,
        note="; ".join(part for part in (estimate.note, note) if part),
        missing_pods=missing,
    )


def _derive(
    step: StepSignals, previous: StepSignals | None, *, units: DemandUnits, ready: int | None
) -> DemandEstimate:
    arrivals = finite(step, SignalKind.ARRIVALS)
    if arrivals is not None:
        return DemandEstimate(value=max(0.0, arrivals), source="arrivals")
    completions = finite(step, SignalKind.COMPLETIONS)
    if completions is not None:
        return _conservation(step, previous, completions, units=units, ready=ready)
    utilisation = finite(step, SignalKind.UTILIZATION)
    if utilisation is not None and units.target_utilization is not None:
        return _from_utilisation(utilisation, units=units, ready=ready)
    if SignalKind.WAITING in step.values:
        return DemandEstimate(value=math.nan, source="waiting", note="a queue bounds demand but does not measure it")
    return DemandEstimate(value=math.nan, source="no signal", note="no demand signal observed at this step")


def _conservation(
    step: StepSignals, previous: StepSignals | None, completions: float, *, units: DemandUnits, ready: int | None
) -> DemandEstimate:
    change = _backlog_change_rate(step, previous)
    source = "completions" if change is None else "completions + change in waiting and running"
    value = max(0.0, completions + (change or 0.0))
    capacity = None if ready is None else ready * units.capacity_per_replica
    if capacity is not None and capacity > 0 and completions >= units.saturation * capacity:
        note = f"completions at {completions / capacity:.0%} of the {ready} ready replicas' capacity"
        return DemandEstimate.at_saturation(value, source=source, note=note)
    waiting = finite(step, SignalKind.WAITING)
    if waiting is not None and waiting > 0:
        return DemandEstimate(
            value=value,
            source=source,
            lower_bound=True,
            note=f"{waiting:.4g} waiting: completions are capped by capacity and requests that gave up are unseen",
        )
    return DemandEstimate(value=value, source=source)


def _from_utilisation(utilisation: float, *, units: DemandUnits, ready: int | None) -> DemandEstimate:
    source = UTILISATION_SOURCE
    if ready is None:
        return DemandEstimate(value=math.nan, source=source, note="no ready replica count observed")
    assert units.target_utilization is not None
    share = min(max(utilisation, 0.0), 1.0)
    value = share * ready * units.capacity_per_replica / units.target_utilization
    if share >= units.saturation:
        note = f"utilisation {share:.0%} is at saturation, so the replicas cannot show more"
        return DemandEstimate.at_saturation(value, source=source, note=note)
    return DemandEstimate(value=value, source=source)
