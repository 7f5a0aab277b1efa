"""Spike-aware headroom: bursts the history does not announce, priced, held as warm slots.

Pure. `fit_bursts` reads the history window; `burst_headroom` prices the headroom for
the time of day a decision is made at.

- **A burst** is a run of steps whose demand stands more than BURST_SCALES robust
  standard deviations (1.4826 x the MAD of the residual) above the median demand of its
  time of day, and at least one replica's capacity above it: smaller surprises are the
  forecast band's and the calibrator's business. Times of day need two days of history
  to have a median of their own; before that the whole window shares one.
- **Which burst steps placeholders serve.** Nothing announces a burst, so the plan
  learns of it one step late and its reactive answer asks for pods then. A pod placed on
  a node that placeholders keep warm serves from step `1 + lead_steps` of the burst, one
  that needs a new node only from `1 + node_lead_steps`. The steps in between are what
  warm slots buy; a burst shorter than `1 + lead_steps` steps is over before any pod
  starts, so only running replicas could have served it, and covering the target share
  of steps with running capacity is the calibrated quantile's job, not this module's.
- **The price.** Reading the target coverage as a newsvendor's critical ratio (unserved
  demand priced at `target / (1 - target)` times the capacity held idle for a step),
  the headroom is the target quantile, over every step at that time of day, of the burst
  demand that warm slots would serve (zero on the steps they would not): hold one more
  slot while the share of steps it would serve exceeds `1 - target`. A series without
  such bursts, or whose bursts are rarer than that, gets none.
- **Placeholders, not replicas.** The slot's node costs the same either way, but a
  placeholder runs no model server (the backtest's replica-steps) and any pod preempts
  it. A running replica would also serve a burst's first steps; that cover is what the
  calibrated quantile holds, on the share of steps the target asks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import FloatArray

BURST_SCALES = 3.0
"""Robust standard deviations above the time of day's median that make a step part of a burst."""
MAD_TO_SIGMA = 1.4826
DAY_SECONDS = 86400.0
BIN_CHOICES = (24, 12, 8, 6, 4, 3, 2)
"""Time-of-day bins, finest first. Bursts of real traffic follow the daily cycle (the
LoRA traces burst by day): priced per hour, the headroom is held when bursts come, not
all day. A bin needs 1 / (1 - target) steps for its tail quantile to be seen at all, so
a high target on a short window gets coarser bins."""


@dataclass(frozen=True, slots=True)
class BurstModel:
    """The bursts of one history window, as the pricing needs them."""

    bins: int
    """Time-of-day bins (BIN_CHOICES) with two days of history or more, else 1."""
    steps_per_bin: tuple[int, ...]
    """Finite steps observed in each bin."""
    warm_excess: tuple[FloatArray, ...]
    """Per bin, the demand above the burst threshold on each burst step that a pod on a
    warm node serves and one on a new node does not, largest first."""
    bursts: int
    mean_steps: float
    """Mean length of a burst, in steps."""
    threshold: float
    """Demand above the hour's median that counts as a burst."""

    def bin_of(self, timestamp: float) -> int:
        return int((timestamp % DAY_SECONDS) // (DAY_SECONDS / self.bins))


@dataclass(frozen=True, slots=True)
class Headroom:
    """Placeholder replicas held for bursts at one instant, and why (the planner prefixes the count)."""

    replicas: int
    demand: float
    reason: str


NO_HEADROOM = Headroom(replicas=0, demand=0.0, reason="")


def _tail_steps(spec: ScalerSpec) -> int:
    """Steps in which the target's tail (1 - target of them) holds one step."""
    return math.ceil(1.0 / (1.0 - spec.target_coverage) - 1e-9)


def _bins(timestamps: FloatArray, finite_steps: int, spec: ScalerSpec) -> int:
    span = float(timestamps[-1] - timestamps[0]) + spec.step_seconds
    if span < 2 * DAY_SECONDS:
        return 1
    for bins in BIN_CHOICES:
        if spec.step_seconds <= DAY_SECONDS / bins and finite_steps / bins >= _tail_steps(spec):
            return bins
    return 1


def fit_bursts(timestamps: FloatArray, values: FloatArray, *, spec: ScalerSpec) -> BurstModel | None:
    """Detect the window's bursts and keep what pricing needs.

    None when the window holds fewer finite steps than the target's tail needs to show
    one step (100 at a target of 0.99): too little history to price it.
    """
    finite = np.isfinite(values)
    finite_steps = int(finite.sum())
    if finite_steps < _tail_steps(spec):
        return None
    bins = _bins(timestamps, finite_steps, spec)
    slot = ((timestamps % DAY_SECONDS) // (DAY_SECONDS / bins)).astype(np.int64)
    medians = np.zeros(bins)
    for index in range(bins):
        in_bin = values[finite & (slot == index)]
        medians[index] = np.median(in_bin) if in_bin.size else 0.0
    residual = np.where(finite, values - medians[slot], -np.inf)
    observed = residual[finite]
    centre = float(np.median(observed))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(observed - centre)))
    threshold = max(centre + BURST_SCALES * scale, spec.capacity_per_replica)
    above = np.concatenate(([False], residual > threshold, [False]))
    edges = np.diff(above.astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # Burst steps from the first a warm pod serves to the first a pod on a new node serves.
    first, last = 1 + spec.lead_steps, 1 + spec.node_lead_steps
    offsets = np.arange(first, last)
    warm = (starts[:, None] + offsets[None, :])[(ends - starts)[:, None] > offsets[None, :]]
    excess = residual[warm] - threshold
    steps_per_bin = np.bincount(slot[finite], minlength=bins)
    return BurstModel(
        bins=bins,
        steps_per_bin=tuple(int(count) for count in steps_per_bin),
        warm_excess=tuple(np.sort(excess[slot[warm] == index])[::-1] for index in range(bins)),
        bursts=int(starts.size),
        mean_steps=float(np.mean(ends - starts)) if starts.size else 0.0,
        threshold=threshold,
    )


def burst_headroom(model: BurstModel | None, *, now: float, spec: ScalerSpec) -> Headroom:
    """The priced headroom for bursts in the hour of `now`, in placeholder replicas."""
    if model is None:
        return NO_HEADROOM
    index = model.bin_of(now)
    excess = model.warm_excess[index]
    allowed = math.floor((1.0 - spec.target_coverage) * model.steps_per_bin[index])
    if excess.size <= allowed:
        return NO_HEADROOM
    demand = float(excess[allowed])
    replicas = math.ceil(demand / spec.capacity_per_replica - 1e-9)
    if replicas <= 0:
        return NO_HEADROOM
    steps = model.steps_per_bin[index]
    where = f"of the {steps} steps at this time of day" if model.bins > 1 else f"of {steps} steps"
    price = spec.target_coverage / (1.0 - spec.target_coverage)
    reason = (
        f"hold {demand:.4g} of burst headroom: {model.bursts} unannounced bursts "
        f"(over {model.threshold:.4g} above the median for the time of day, {model.mean_steps:.3g} steps on average) "
        f"outlast a pod start on a warm node ({spec.lead_time_seconds:g}s) but not on a new one "
        f"({spec.lead_time_seconds + spec.node_lead_time_seconds:g}s), on {excess.size} {where}; "
        f"unserved demand priced at {price:.3g}x idle capacity (p{spec.target_coverage * 100:g})"
    )
    return Headroom(replicas=replicas, demand=demand, reason=reason)
