"""Benchmark: the closed-loop table per signal bundle on every trace of at least two days.

Run: nice .venv/bin/python -m tests.bench.bench_closed_loop [--traces DIR] [--jobs N] [--only NAME]

Replicas serve each trace's values as arrivals per second (autoscaler.sim.serving: a FIFO
backlog, 120 s patience, no extra scrape delay) on the cluster model (pod startup 180 s,
node startup 300 s, 4 pods per node, capacity per replica = p95 of the trace / 20).
Each policy sees only the scraped series of a bundle: arrivals; completions + waiting;
utilisation (targetUtilization 0.8); waiting only. Ours runs the daemon's defaults
(model auto, drainTime 120 s).

Targets (issue 14), per trace of at least two days:
  arrivals, completions+waiting, utilisation:
      node-steps <= 1.5x the oracle's; lost <= KEDA/HPA's on the same series;
      lost <= 2x ours on arrivals, or <= 0.1 % of demand
  waiting: node-steps and lost <= KEDA/HPA's on the queue
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autoscaler.sim.closed_loop import (
    BUNDLES,
    ClosedLoopConfig,
    ClosedLoopRun,
    bundle_rows,
    closed_loop_jobs,
    closed_loop_table,
    run_named_closed_loop,
)
from autoscaler.sim.trace import Trace
from tests.reference_cluster import reference_config
from tests.traces import add_traces_option, read_trace

TWO_DAYS = 2 * 86400.0
NODE_STEPS_VS_ORACLE = 1.5
LOST_VS_ARRIVALS = 2.0
LOST_SHARE_FLOOR = 0.001


@dataclass(frozen=True)
class Task:
    trace_name: str
    policy: str
    bundle: str


def config_for(trace: Trace) -> ClosedLoopConfig:
    return ClosedLoopConfig(backtest=reference_config(trace))


def run_task(task: Task, traces: Path) -> tuple[Task, ClosedLoopRun, float]:
    trace = read_trace(traces / task.trace_name)
    started = time.process_time()
    run = run_named_closed_loop(task.policy, task.bundle, trace, config_for(trace))
    return task, run, time.process_time() - started


def verdict(runs: list[ClosedLoopRun], bundle: str) -> str:
    ours, keda, on_arrivals, oracle = bundle_rows(runs, bundle)
    lost, keda_lost = ours.serving.lost_share, keda.serving.lost_share
    if bundle == "waiting":
        ok = ours.node_steps <= keda.node_steps and lost <= keda_lost
        return (
            f"  {bundle:<20} {'PASS' if ok else 'MISS'}  node-steps {ours.node_steps} vs KEDA/HPA {keda.node_steps}; "
            f"lost {100 * lost:.3f}% vs KEDA/HPA {100 * keda_lost:.3f}%"
        )
    nodes = ours.node_steps / oracle.node_steps if oracle.node_steps else float("inf")
    near_arrivals = lost <= LOST_VS_ARRIVALS * on_arrivals.serving.lost_share or lost <= LOST_SHARE_FLOOR
    ok = nodes <= NODE_STEPS_VS_ORACLE and lost <= keda_lost and near_arrivals
    return (
        f"  {bundle:<20} {'PASS' if ok else 'MISS'}  node-steps {nodes:.2f}x oracle (<= {NODE_STEPS_VS_ORACLE}); "
        f"lost {100 * lost:.3f}% vs KEDA/HPA {100 * keda_lost:.3f}% and ours on arrivals "
        f"{100 * on_arrivals.serving.lost_share:.3f}% (<= {LOST_VS_ARRIVALS:g}x or <= {100 * LOST_SHARE_FLOOR:g}%)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_traces_option(parser)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (the machine is shared)")
    parser.add_argument("--only", action="append", help="trace file name(s) to run; default all of two days or more")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    names = sorted(
        path.name
        for path in args.traces.glob("*.csv")
        if (not args.only or path.name in args.only) and read_trace(path).span_seconds >= TWO_DAYS
    )
    bundles = tuple(BUNDLES)
    tasks = [Task(name, policy, bundle) for name in names for policy, bundle in closed_loop_jobs(bundles)]
    results: dict[str, list[ClosedLoopRun]] = {name: [] for name in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for task, run, seconds in pool.map(run_task, tasks, [args.traces] * len(tasks)):
            results[task.trace_name].append(run)
            cpu[task.trace_name] += seconds
    passes = misses = 0
    for name in names:
        trace = read_trace(args.traces / name)
        print(
            f"\n== {name}: {len(trace)} rows, step {trace.step_seconds:g} s, "
            f"{trace.span_seconds / 86400:.1f} days (policy CPU {cpu[name]:.1f} s)"
        )
        print(closed_loop_table(results[name], bundles))
        for bundle in bundles:
            line = verdict(results[name], bundle)
            passes += "PASS" in line
            misses += "MISS" in line
            print(line)
    print(f"\ntargets: {passes} PASS, {misses} MISS; wall {time.perf_counter() - started:.0f} s, --jobs {args.jobs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
