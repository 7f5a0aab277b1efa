"""Benchmark: how often the KEDA chain's plan leads its spike, over every rebuild window.

Run: nice .venv/bin/python -m tests.bench.bench_keda_chain_rebuild [--every N]

`tests/e2e/test_keda_chain.py` replays a week of history and then the morning rise
through the daemon. Which model serves the rise, and on what data it was fitted, depends
on where the target's daily rebuild boundary falls: its refit phase comes from a hash
of the target's key, whose metadata holds the scaler's port, and the boundary from the
wall clock. With a trace day compressed into a wall hour, a boundary 0 to 24 wall
hours back lies anywhere in, or before, the 7 hours of history.

This runs the daemon's own transitions (`rebuilt_pipeline`, then observe, refit when due,
decide) on the test's trace and metadata for every `--every`-th refit phase, and prints
per phase the model, the plans before the spike, whether the spike's replicas were
planned in time (3 steps ahead, the test's lead time), and the share of demand left
unserved by the plan and by a reactive rule that sees each step 13 s late (HPA sync and
pod start), second by second.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np

from autoscaler.domain.signals import SignalKind, StepSignals
from autoscaler.domain.spec import parse_spec
from autoscaler.planner.pipeline import RefitSchedule
from autoscaler.planner.replay import rebuild_boundary, rebuilt_pipeline
from tests.e2e.replay import load_compressed_trace
from tests.e2e.test_keda_chain import (
    BIN_STEPS,
    CAPACITY_PER_REPLICA,
    HISTORY_DAYS,
    POD_READY_DELAY_S,
    REPLAY_DAY,
    REPLAY_FROM_HOUR,
    REPLAY_TO_HOUR,
    TRACE,
    WALL_STEP_S,
    predictive_trigger,
    replicas_needed,
    spike_step,
)

REGISTERED_AT_STEP = 3
"""Live steps in the warm start: KEDA registers the target a few steps into the replay."""
READY_DELAY_S = POD_READY_DELAY_S + 3  # HPA sync and KEDA, on top of the pod start
FIRST_SECOND = 60  # the first seconds follow the warm start's first plan, not the policies
EPOCH = 1_796_680_000.0  # any step-aligned wall time: the phase sweep moves the boundary


@dataclass(frozen=True)
class PhaseRow:
    phase: int
    model: str
    plans_before_spike: list[int]
    in_time: bool
    unserved_planned: float
    unserved_reactive: float


def run(every: int) -> list[PhaseRow]:
    trace = load_compressed_trace(TRACE, bin_steps=BIN_STEPS, wall_step_seconds=WALL_STEP_S)
    live_start, live_end = trace.index(REPLAY_DAY, REPLAY_FROM_HOUR), trace.index(REPLAY_DAY, REPLAY_TO_HOUR)
    history = HISTORY_DAYS * trace.steps_per_day
    values = trace.values[live_start - history : live_end]
    live = values[history:]
    spike = spike_step(live)
    metadata = predictive_trigger(0)["metadata"]
    spec = parse_spec({key: value for key, value in metadata.items() if key != "scalerAddress"})
    times = EPOCH + np.arange(values.size) * WALL_STEP_S
    steps = [
        StepSignals(timestamp=float(at), values={SignalKind.ARRIVALS: float(value)})
        for at, value in zip(times, values, strict=True)
    ]
    registered = history + REGISTERED_AT_STEP
    rows = []
    for phase in range(0, RefitSchedule().interval_steps(WALL_STEP_S), every):
        boundary = rebuild_boundary(spec, refit_phase_steps=phase, at=float(times[registered]))
        pipeline = rebuilt_pipeline(spec, steps[: registered + 1], refit_phase_steps=phase, boundary=boundary)
        plans: dict[int, int] = {}  # by live step; the decisions from the first one after the warm start
        for index in range(registered + 1, len(steps)):
            pipeline.observe_step(steps[index])
            pipeline.refit_if_due()
            plans[index - history] = pipeline.decide(float(times[index])).replicas
        unserved_planned = unserved_reactive = offered = 0.0
        for second in range(FIRST_SECOND, int(live.size * WALL_STEP_S)):
            demand = float(live[int(second // WALL_STEP_S)])
            seen = int((second - READY_DELAY_S) // WALL_STEP_S)
            offered += demand
            unserved_planned += max(0.0, demand - plans[seen] * CAPACITY_PER_REPLICA)
            unserved_reactive += max(0.0, demand - replicas_needed(float(live[seen])) * CAPACITY_PER_REPLICA)
        row = PhaseRow(
            phase=phase,
            model=pipeline.chosen_model or "-",
            plans_before_spike=[plans[i] for i in range(spike - spec.lead_steps, spike)],
            in_time=plans[spike - math.ceil(READY_DELAY_S / WALL_STEP_S)] >= replicas_needed(float(live[spike])),
            unserved_planned=unserved_planned / offered,
            unserved_reactive=unserved_reactive / offered,
        )
        rows.append(row)
        print(
            f"{row.phase:>5} {row.model:>15} {row.plans_before_spike} {'in time' if row.in_time else 'late':>7} "
            f"{row.unserved_planned:8.2%} {row.unserved_reactive:8.2%}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=97, help="step between refit phases swept (default 97)")
    arguments = parser.parse_args()
    print(f"{'phase':>5} {'model':>15} plans before the spike  in time  unserved: planned reactive")
    rows = run(arguments.every)
    in_time = sum(row.in_time for row in rows)
    print(f"\nin time at {in_time} of {len(rows)} phases ({in_time / len(rows):.0%})")
    print(
        f"unserved, planned: at most {max(r.unserved_planned for r in rows):.2%}; "
        f"reactive: at least {min(r.unserved_reactive for r in rows):.2%}"
    )
    by_model: dict[str, list[bool]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row.in_time)
    for model, hits in sorted(by_model.items()):
        print(f"  {model}: in time at {sum(hits)} of {len(hits)}")


if __name__ == "__main__":
    main()
