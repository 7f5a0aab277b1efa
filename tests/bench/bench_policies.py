"""Benchmark: four scaling policies on every shared trace, with the issue's targets.

Run: .venv/bin/python -m tests.bench.bench_policies [--traces DIR] [--jobs N] [--only NAME]

Cluster model for every trace: pod startup 180 s, node startup 300 s, 4 pods per node,
capacity per replica = p95 of the trace's demand / 20. Ours runs with the daemon's
defaults (target coverage 0.95) and again with --target-coverage 0.99.

Targets, checked on traces with at least two days of data:
  default:  ours unserved <= 1/2 of holt-winters', ours node-steps <= 1.10x holt-winters'
  0.99:     ours unserved <= 1/10 of reactive's, node-steps <= 1.5x the oracle's,
            steps short <= 2%
Speed: `autoscaler backtest nasa_http_jul95.csv ... --jobs 2` end to end (all four policies).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from autoscaler.sim.backtest import POLICY_NAMES, BacktestConfig, PolicyRun, run_named, summary_table
from autoscaler.sim.trace import Trace, parse_trace

TRACES = Path("/work/shared/traces")
SPEED_TRACE = "nasa_http_jul95.csv"
SPEED_LIMIT_SECONDS = 60.0
TWO_DAYS = 2 * 86400.0
HIGH_COVERAGE = 0.99


@dataclass(frozen=True)
class Task:
    trace_name: str
    policy: str
    coverage: float


def load(path: Path) -> Trace:
    with path.open() as handle:
        return parse_trace(handle)


def config_for(trace: Trace, coverage: float) -> BacktestConfig:
    return BacktestConfig(
        step_seconds=trace.step_seconds,
        capacity_per_replica=float(np.percentile(trace.values, 95)) / 20.0,
        pod_startup_seconds=180.0,
        node_startup_seconds=300.0,
        pods_per_node=4,
        target_coverage=coverage,
    )


def run_task(task: Task, traces: Path) -> tuple[Task, PolicyRun, float]:
    trace = load(traces / task.trace_name)
    started = time.perf_counter()
    run = run_named(task.policy, trace, config_for(trace, task.coverage))
    return task, replace(run, records=()), time.perf_counter() - started


def verdicts(runs: dict[tuple[str, float], PolicyRun]) -> list[str]:
    ours, ours_high = runs[("ours", 0.95)], runs[("ours", HIGH_COVERAGE)]
    holt, reactive, oracle = runs[("holt-winters", 0.95)], runs[("reactive", 0.95)], runs[("oracle", 0.95)]
    default_ok = (
        ours.totals.unserved <= 0.5 * holt.totals.unserved and ours.totals.node_steps <= 1.10 * holt.totals.node_steps
    )
    high_ok = (
        ours_high.totals.unserved <= 0.1 * reactive.totals.unserved
        and ours_high.totals.node_steps <= 1.5 * oracle.totals.node_steps
        and ours_high.totals.short_share <= 0.02
    )

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else ("0" if a == 0 else "inf")

    return [
        f"  default: {'PASS' if default_ok else 'MISS'}  unserved vs holt-winters "
        f"{ratio(ours.totals.unserved, holt.totals.unserved)} (<= 0.50), node-steps "
        f"{ratio(ours.totals.node_steps, holt.totals.node_steps)}x (<= 1.10)",
        f"  0.99:    {'PASS' if high_ok else 'MISS'}  unserved vs reactive "
        f"{ratio(ours_high.totals.unserved, reactive.totals.unserved)} (<= 0.10), node-steps vs oracle "
        f"{ratio(ours_high.totals.node_steps, oracle.totals.node_steps)}x (<= 1.50), steps short "
        f"{100 * ours_high.totals.short_share:.2f}% (<= 2%)",
    ]


def speed_check(traces: Path) -> None:
    """The command itself, end to end, as a user runs it on 2 cores (--jobs 2)."""
    trace = load(traces / SPEED_TRACE)
    config = config_for(trace, 0.95)
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable, "-m", "autoscaler", "backtest", str(traces / SPEED_TRACE),
            "--step-seconds", f"{config.step_seconds:g}", "--capacity", repr(config.capacity_per_replica),
            "--pod-startup-seconds", "180", "--node-startup-seconds", "300", "--pods-per-node", "4",
            "--jobs", "2", "--out", str(Path(scratch) / "decisions.csv"),
        ]  # fmt: skip
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        print(f"speed: the command failed ({completed.returncode}): {completed.stderr.strip()}")
        return
    verdict = "PASS" if elapsed <= SPEED_LIMIT_SECONDS else "MISS"
    print(
        f"speed: autoscaler backtest {SPEED_TRACE} ({len(trace)} rows, 4 policies, --jobs 2): "
        f"{elapsed:.1f} s wall  {verdict} (<= {SPEED_LIMIT_SECONDS:.0f} s); "
        f"load average before the run {load_before:.1f} on {os.cpu_count()} cores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (the machine is shared)")
    parser.add_argument("--only", action="append", help="trace file name(s) to run; default all")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    args = parser.parse_args(argv)
    if args.speed_only:
        speed_check(args.traces)
        return 0
    names = sorted(path.name for path in args.traces.glob("*.csv") if not args.only or path.name in args.only)
    tasks = [Task(name, policy, 0.95) for name in names for policy in POLICY_NAMES]
    tasks += [Task(name, "ours", HIGH_COVERAGE) for name in names]
    results: dict[str, dict[tuple[str, float], PolicyRun]] = {name: {} for name in names}
    seconds: dict[str, float] = dict.fromkeys(names, 0.0)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_task, task, args.traces) for task in tasks]
        for future in futures:
            task, run, elapsed = future.result()
            results[task.trace_name][(task.policy, task.coverage)] = run
            seconds[task.trace_name] += elapsed
    passes = misses = 0
    for name in names:
        trace = load(args.traces / name)
        runs = results[name]
        span_days = (trace.timestamps[-1] - trace.timestamps[0] + trace.step_seconds) / 86400.0
        print(
            f"\n== {name}: {len(trace)} rows, step {trace.step_seconds:g} s, {span_days:.1f} days "
            f"(policy CPU {seconds[name]:.1f} s)"
        )
        ordered = [runs[("ours", 0.95)], replace(runs[("ours", HIGH_COVERAGE)], name="ours@0.99")]
        ordered += [runs[(policy, 0.95)] for policy in ("holt-winters", "reactive", "oracle")]
        print(summary_table(ordered))
        coverage = ", ".join(
            f"{label} {run.achieved_coverage:.3f}"
            for label, run in (("0.95", ordered[0]), ("0.99", ordered[1]))
            if run.achieved_coverage is not None
        )
        print(f"  coverage achieved by our plans: {coverage}")
        if span_days >= 2.0:
            lines = verdicts(runs)
            passes += sum("PASS" in line for line in lines)
            misses += sum("MISS" in line for line in lines)
            print("\n".join(lines))
        else:
            print("  (under two days: no target)")
    print(f"\ntargets: {passes} PASS, {misses} MISS")
    if not args.skip_speed and (args.traces / SPEED_TRACE).exists():
        speed_check(args.traces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
