"""Benchmark: four scaling policies on every trace in `--traces DIR`, with the issue's targets.

Run: .venv/bin/python -m tests.bench.bench_policies [--traces DIR] [--jobs N] [--only NAME]
     [--daily-rebuild]

Cluster model for every trace: pod startup 180 s, node startup 300 s, 4 pods per node,
capacity per replica = p95 of the trace's demand / 20. Ours runs at every target
coverage of the frontier sweep (`autoscaler.sim.frontier.SWEEP_TARGETS`, which holds
the default 0.95 and 0.99) on the daemon's default coverage basis, the baselines once.

Targets (issue 17), checked on traces with at least two days of data:
  frontier: ours' unserved at holt-winters' node cost, read off the frontier, <= 0.7x its unserved
  default:  ours leaves no more unserved than holt-winters, at <= 1.10x its node-steps
  0.99:     ours unserved <= 1/10 of reactive's, node-steps <= 1.5x the oracle's
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

from autoscaler.domain.spec import COVERAGE_BASES, DEFAULT_COVERAGE_BASIS
from autoscaler.sim.backtest import BacktestConfig, PolicyRun, run_named, summary_table
from autoscaler.sim.frontier import SWEEP_TARGETS, FrontierPoint, unserved_at_cost
from autoscaler.sim.trace import Trace
from tests.reference_cluster import reference_config
from tests.traces import add_traces_option, read_trace, trace_in

SPEED_TRACE = "nasa_http_jul95.csv"
SPEED_LIMIT_SECONDS = 60.0
TWO_DAYS = 2 * 86400.0
HIGH_COVERAGE = 0.99
DEFAULT_COVERAGE = 0.95
BASELINES = ("holt-winters", "reactive", "oracle")
FRONTIER_RATIO = 0.7
DEFAULT_COST_RATIO = 1.10
HIGH_UNSERVED_RATIO = 0.1
HIGH_COST_RATIO = 1.5


@dataclass(frozen=True)
class Task:
    trace_name: str
    policy: str
    coverage: float
    basis: str
    daily_rebuild: bool = False


def config_for(
    trace: Trace, coverage: float, basis: str = DEFAULT_COVERAGE_BASIS, *, daily_rebuild: bool = False
) -> BacktestConfig:
    return reference_config(trace, target_coverage=coverage, coverage_basis=basis, daily_rebuild=daily_rebuild)


def run_task(task: Task, traces: Path) -> tuple[Task, PolicyRun, float]:
    trace = read_trace(traces / task.trace_name)
    started = time.perf_counter()
    config = config_for(trace, task.coverage, task.basis, daily_rebuild=task.daily_rebuild)
    run = run_named(task.policy, trace, config)
    return task, replace(run, records=()), time.perf_counter() - started


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else ("0" if a == 0 else "inf")


def verdicts(runs: dict[tuple[str, float], PolicyRun]) -> list[str]:
    ours, ours_high = runs[("ours", DEFAULT_COVERAGE)], runs[("ours", HIGH_COVERAGE)]
    holt, reactive, oracle = (runs[(name, DEFAULT_COVERAGE)].totals for name in BASELINES)
    swept = [FrontierPoint.of("ours", run.totals, target) for (policy, target), run in runs.items() if policy == "ours"]
    at_cost = unserved_at_cost(swept, holt.node_steps)
    frontier_ok = at_cost is not None and at_cost <= FRONTIER_RATIO * holt.unserved_share
    at_cost_text = "below the cheapest target" if at_cost is None else f"{100 * at_cost:.3f}%"
    default_ok = (
        ours.totals.unserved <= holt.unserved and ours.totals.node_steps <= DEFAULT_COST_RATIO * holt.node_steps
    )
    high_ok = (
        ours_high.totals.unserved <= HIGH_UNSERVED_RATIO * reactive.unserved
        and ours_high.totals.node_steps <= HIGH_COST_RATIO * oracle.node_steps
    )
    return [
        f"  frontier: {'PASS' if frontier_ok else 'MISS'}  at holt-winters' node-steps ours leaves {at_cost_text} "
        f"vs its {100 * holt.unserved_share:.3f}%: "
        f"{'n/a' if at_cost is None else _ratio(at_cost, holt.unserved_share)} (<= {FRONTIER_RATIO})",
        f"  default:  {'PASS' if default_ok else 'MISS'}  unserved vs holt-winters "
        f"{_ratio(ours.totals.unserved, holt.unserved)} (<= 1), node-steps "
        f"{_ratio(ours.totals.node_steps, holt.node_steps)}x (<= {DEFAULT_COST_RATIO})",
        f"  0.99:     {'PASS' if high_ok else 'MISS'}  unserved vs reactive "
        f"{_ratio(ours_high.totals.unserved, reactive.unserved)} (<= {HIGH_UNSERVED_RATIO}), node-steps vs oracle "
        f"{_ratio(ours_high.totals.node_steps, oracle.node_steps)}x (<= {HIGH_COST_RATIO})",
    ]


def frontier_table(runs: dict[tuple[str, float], PolicyRun]) -> str:
    """Ours at every swept target, cheapest first: the frontier the verdicts read."""
    points = sorted(
        ((target, run.totals) for (policy, target), run in runs.items() if policy == "ours"),
        key=lambda item: item[1].node_steps,
    )
    cells = "  ".join(
        f"{target:g}: {100 * totals.unserved_share:.3f}% @ {totals.node_steps}" for target, totals in points
    )
    return f"  frontier (target: unserved @ node-steps): {cells}"


def speed_check(traces: Path) -> None:
    """The command itself, end to end, as a user runs it on 2 cores (--jobs 2)."""
    path = trace_in(traces, SPEED_TRACE)
    trace = read_trace(path)
    config = config_for(trace, 0.95)
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable, "-m", "autoscaler", "backtest", str(path),
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
    add_traces_option(parser)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (the machine is shared)")
    parser.add_argument("--only", action="append", help="trace file name(s) to run; default all")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--coverage-basis", choices=COVERAGE_BASES, default=DEFAULT_COVERAGE_BASIS, help="for ours")
    parser.add_argument(
        "--daily-rebuild", action="store_true", help="ours also makes the daemon's daily rebuild (several times slower)"
    )
    args = parser.parse_args(argv)
    if args.speed_only:
        speed_check(args.traces)
        return 0
    names = sorted(path.name for path in args.traces.glob("*.csv") if not args.only or path.name in args.only)
    basis = args.coverage_basis
    tasks = [Task(name, policy, DEFAULT_COVERAGE, basis) for name in names for policy in BASELINES]
    for name in names:
        trace = read_trace(args.traces / name)
        long_enough = trace.span_seconds >= TWO_DAYS
        targets = SWEEP_TARGETS if long_enough else (DEFAULT_COVERAGE, HIGH_COVERAGE)
        tasks += [Task(name, "ours", target, basis, args.daily_rebuild) for target in targets]
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
        trace = read_trace(args.traces / name)
        runs = results[name]
        span_days = trace.span_seconds / 86400.0
        print(
            f"\n== {name}: {len(trace)} rows, step {trace.step_seconds:g} s, {span_days:.1f} days "
            f"(policy CPU {seconds[name]:.1f} s)"
        )
        ordered = [runs[("ours", DEFAULT_COVERAGE)], replace(runs[("ours", HIGH_COVERAGE)], name="ours@0.99")]
        ordered += [runs[(policy, DEFAULT_COVERAGE)] for policy in BASELINES]
        print(summary_table(ordered))
        coverage = ", ".join(
            f"{label} {run.achieved_coverage:.3f}"
            for label, run in (("0.95", ordered[0]), ("0.99", ordered[1]))
            if run.achieved_coverage is not None
        )
        print(f"  coverage achieved by our plans ({basis}): {coverage}")
        if span_days >= 2.0:
            print(frontier_table(runs))
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
