"""`autoscaler backtest --closed-loop`: the closed-loop comparison per signal bundle.

Replicas serve the trace's arrivals (a FIFO backlog, a patience, a scrape delay, the
cluster model); each policy sees only the scraped series of a bundle. Prints delayed
and lost demand, steps with a backlog, replica-steps and node-steps for ours, KEDA/HPA
on the same series, ours on arrivals and the oracle.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor

from autoscaler.commands.argtypes import EXIT_USAGE, between, non_negative
from autoscaler.domain.errors import SpecError
from autoscaler.sim.backtest import BacktestConfig
from autoscaler.sim.closed_loop import (
    BUNDLES,
    DEFAULT_DRAIN_TIME_SECONDS,
    ClosedLoopConfig,
    ClosedLoopRun,
    closed_loop_jobs,
    closed_loop_table,
    run_named_closed_loop,
)
from autoscaler.sim.trace import Trace

_fraction = between(0.05, 1.0, parse=float, name="_fraction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("closed loop")
    group.add_argument(
        "--closed-loop",
        action="store_true",
        help="serve the trace's arrivals with the replicas each policy asks for; compare per signal bundle",
    )
    group.add_argument("--patience-seconds", type=non_negative, default=120.0, help="a queued request gives up after")
    group.add_argument(
        "--scrape-delay-seconds", type=non_negative, default=0.0, help="extra age of the newest scrape (default 0)"
    )
    group.add_argument(
        "--target-utilization", type=_fraction, default=0.8, help="targetUtilization of the utilisation bundle"
    )
    group.add_argument(
        "--drain-time-seconds",
        type=non_negative,
        default=DEFAULT_DRAIN_TIME_SECONDS,
        help="drainTime (default %(default)g)",
    )
    group.add_argument(
        "--bundle", choices=tuple(BUNDLES), action="append", help="signal bundle(s) to compare; default all"
    )


def closed_loop_config(args: argparse.Namespace, backtest: BacktestConfig) -> ClosedLoopConfig:
    return ClosedLoopConfig(
        backtest=backtest,
        patience_seconds=args.patience_seconds,
        scrape_delay_seconds=args.scrape_delay_seconds,
        target_utilization=args.target_utilization,
        drain_time_seconds=args.drain_time_seconds,
    )


def run_bundles(trace: Trace, config: ClosedLoopConfig, bundles: tuple[str, ...], *, jobs: int) -> list[ClosedLoopRun]:
    """Every (policy, bundle) run; in a pool of `jobs` processes when jobs > 1."""
    pairs = closed_loop_jobs(bundles)
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_named_closed_loop, name, bundle, trace, config) for name, bundle in pairs]
            return [future.result() for future in futures]
    return [run_named_closed_loop(name, bundle, trace, config) for name, bundle in pairs]


def run(args: argparse.Namespace, trace: Trace, backtest: BacktestConfig) -> int:
    config = closed_loop_config(args, backtest)
    bundles = tuple(args.bundle or BUNDLES)
    for bundle in bundles:
        try:
            config.spec(bundle)
        except SpecError as error:
            print(f"autoscaler backtest: these flags give an invalid {bundle} target: {error}", file=sys.stderr)
            return EXIT_USAGE
    runs = run_bundles(trace, config, bundles, jobs=args.jobs)
    print(
        f"{args.trace}: {len(trace)} rows, step {trace.step_seconds:g}s; closed loop, patience "
        f"{config.patience_seconds:g}s, scrape delay {config.scrape_delay_seconds:g}s"
    )
    print(closed_loop_table(runs, bundles))
    return 0
