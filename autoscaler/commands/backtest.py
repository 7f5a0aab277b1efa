"""`autoscaler backtest`: replay a recorded trace through our planner and the baselines.

Writes DECISIONS.csv (one row per trace row: what our planner asked for) and prints
unserved demand, steps short, replica-steps and node-steps for ours, a reactive
KEDA/HPA policy, a Holt-Winters (PHPA-style) policy and a perfect-foresight oracle on
the same cluster model, plus the coverage our calibrated plans achieved at the lead time.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TextIO

from autoscaler.commands import closed_loop, frontier
from autoscaler.commands.argtypes import EXIT_USAGE, between, non_negative, positive
from autoscaler.domain.errors import SpecError, TraceError
from autoscaler.domain.spec import COVERAGE_BASES, DEFAULT_COVERAGE_BASIS, MODELS
from autoscaler.sim.backtest import (
    POLICY_NAMES,
    BacktestConfig,
    PolicyRun,
    comparison,
    make_policy,
    run_named,
    run_policy,
    summary_table,
)
from autoscaler.sim.trace import Trace, parse_trace

PROGRESS_MIN_ROWS = 2000
DECISION_COLUMNS = ("timestamp", "demand", "forecast", "desired_replicas", "buffer_replicas")


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


_coverage = between(0.5, 0.999, parse=float, name="_coverage")
_pods_per_node = between(1, 256, parse=int, name="_pods_per_node")


def add_trace_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, summary: str, description: str | None
) -> argparse.ArgumentParser:
    """A subcommand that replays a trace (`backtest`, `simulate`), with the flags they share."""
    parser = subparsers.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_trace_arguments(parser)
    return parser


def _add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """The trace and the cluster model."""
    parser.add_argument("trace", type=Path, metavar="TRACE.csv", help="CSV with header timestamp,value")
    parser.add_argument("--step-seconds", type=positive, required=True, help="the trace's step")
    parser.add_argument("--capacity", type=positive, required=True, help="demand one replica serves")
    parser.add_argument("--pod-startup-seconds", type=non_negative, required=True, help="pod start to ready")
    parser.add_argument("--node-startup-seconds", type=non_negative, required=True, help="new node to ready")
    parser.add_argument("--pods-per-node", type=_pods_per_node, required=True, help="serving pods per node")
    parser.add_argument(
        "--target-coverage", type=_coverage, default=0.95, help="share of demand (or steps) to cover (default 0.95)"
    )
    parser.add_argument(
        "--coverage-basis",
        choices=COVERAGE_BASES,
        default=DEFAULT_COVERAGE_BASIS,
        help=f"what --target-coverage counts: steps covered or demand served (default {DEFAULT_COVERAGE_BASIS})",
    )
    parser.add_argument("--model", choices=MODELS, default="auto", help="forecasting model (default auto)")
    parser.add_argument(
        "--daily-rebuild",
        action="store_true",
        help="ours also replays its window at each daily boundary, as the daemon does (several times slower)",
    )


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_trace_command(
        subparsers,
        "backtest",
        summary="replay a trace: ours vs reactive, Holt-Winters and an oracle",
        description=__doc__,
    )
    parser.add_argument(
        "--out", type=Path, metavar="DECISIONS.csv", help="where to write decisions (required without --closed-loop)"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")
    parser.add_argument("--jobs", type=int, default=1, help="processes for the baseline policies (default 1)")
    closed_loop.add_arguments(parser)
    frontier.add_arguments(parser)


def load_trace(args: argparse.Namespace) -> tuple[Trace, BacktestConfig]:
    """Read and validate the trace and the flags; CommandError names the problem."""
    try:
        with args.trace.open(encoding="utf-8") as handle:
            trace = parse_trace(handle, step_seconds=args.step_seconds)
    except OSError as error:
        raise CommandError(f"cannot read {args.trace}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise CommandError(f"{args.trace}: not UTF-8 text ({error.reason})") from error
    except TraceError as error:
        raise CommandError(f"{args.trace}: {error}") from error
    config = BacktestConfig(
        step_seconds=args.step_seconds,
        capacity_per_replica=args.capacity,
        pod_startup_seconds=args.pod_startup_seconds,
        node_startup_seconds=args.node_startup_seconds,
        pods_per_node=args.pods_per_node,
        target_coverage=args.target_coverage,
        coverage_basis=args.coverage_basis,
        model=args.model,
        daily_rebuild=args.daily_rebuild,
    )
    try:
        config.spec()
    except SpecError as error:
        raise CommandError(f"these flags give an invalid target: {error}") from error
    return trace, config


class ProgressBar:
    """A one-line bar on a text stream, redrawn in place."""

    def __init__(self, stream: TextIO, label: str, width: int = 30) -> None:
        self.stream = stream
        self.label = label
        self.width = width

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = round(share * self.width)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%} {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _number(value: float) -> str:
    if math.isnan(value):
        return ""
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def write_decisions(path: Path, run: PolicyRun) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(DECISION_COLUMNS)
        for record in run.records:
            writer.writerow(
                (
                    _number(record.timestamp),
                    _number(record.demand),
                    _number(record.forecast),
                    record.desired_replicas,
                    record.buffer_replicas,
                )
            )


def run_all(trace: Trace, config: BacktestConfig, *, jobs: int, show_progress: bool) -> list[PolicyRun]:
    """Ours in this process (with the bar); the baselines alongside in a pool when jobs > 1."""
    baselines = [name for name in POLICY_NAMES if name != "ours"]
    progress = ProgressBar(sys.stderr, "backtest") if show_progress else None
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=min(jobs - 1, len(baselines))) as pool:
            futures = [pool.submit(run_named, name, trace, config) for name in baselines]
            ours = run_policy(make_policy("ours", config, trace), trace, config, on_progress=progress)
            return [ours, *(future.result() for future in futures)]
    ours = run_policy(make_policy("ours", config, trace), trace, config, on_progress=progress)
    return [ours, *(run_named(name, trace, config) for name in baselines)]


def run(args: argparse.Namespace) -> int:
    try:
        trace, config = load_trace(args)
    except CommandError as error:
        print(f"autoscaler backtest: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.closed_loop:
        return closed_loop.run(args, trace, config)
    if args.out is None:
        print("autoscaler backtest: --out DECISIONS.csv is required (except with --closed-loop)", file=sys.stderr)
        return EXIT_USAGE
    frontier_problem = frontier.usage_problem(args)
    if frontier_problem is not None:
        print(f"autoscaler backtest: {frontier_problem}", file=sys.stderr)
        return EXIT_USAGE
    show_progress = args.progress or (sys.stderr.isatty() and len(trace) >= PROGRESS_MIN_ROWS)
    runs = run_all(trace, config, jobs=args.jobs, show_progress=show_progress)
    ours = runs[0]
    try:
        write_decisions(args.out, ours)
    except OSError as error:
        print(f"autoscaler backtest: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.trace}: {len(trace)} rows, step {trace.step_seconds:g}s; decisions written to {args.out}")
    print(summary_table(runs))
    by_name = {run.name: run for run in runs}
    for name in ("reactive", "holt-winters", "oracle"):
        print(comparison(ours, by_name[name]))
    coverage = ours.achieved_coverage
    coverage_text = "n/a (no forecast was scored)" if coverage is None else f"{coverage:.3f}"
    print(
        f"coverage achieved by the plans at the lead time: {coverage_text} "
        f"(target {config.target_coverage:g} of {config.coverage_basis})"
    )
    if args.frontier is not None:
        try:
            print("\n".join(frontier.report(args, trace, config, runs, jobs=args.jobs)))
        except OSError as error:
            print(f"autoscaler backtest: cannot write the frontier: {error.strerror or error}", file=sys.stderr)
            return EXIT_USAGE
    return 0
