"""`autoscaler simulate`: what our planner would have done, step by step, with reasons.

Replays the trace through the same pipeline and cluster model as `backtest` and prints
one line per step: demand, the forecast at the lead time, replicas asked for and
ready, placeholders, nodes, demand left unserved and the planner's reason.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from autoscaler.commands.argtypes import EXIT_USAGE
from autoscaler.commands.backtest import CommandError, add_trace_command, load_trace
from autoscaler.sim.backtest import StepRecord, make_policy, run_policy


def _row(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a row number >= 0")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = add_trace_command(
        subparsers,
        "simulate",
        summary="print the planner's per-step decisions and reasons on a trace",
        description=__doc__,
    )
    parser.add_argument("--from", dest="first_row", type=_row, default=0, help="first data row to print (0-based)")
    parser.add_argument("--to", dest="last_row", type=_row, default=None, help="last data row to print (inclusive)")


def format_record(row: int, record: StepRecord) -> str:
    clock = datetime.fromtimestamp(record.timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    forecast = "-" if record.forecast != record.forecast else f"{record.forecast:.4g}"
    short = f" SHORT {record.unserved:.4g}" if record.unserved > 0 else ""
    return (
        f"{row:>7} {clock} demand={record.demand:.4g} forecast={forecast} replicas={record.desired_replicas}"
        f" ready={record.ready_replicas} buffer={record.buffer_replicas} nodes={record.nodes}{short}"
        f"  | {record.reason}"
    )


def run(args: argparse.Namespace) -> int:
    try:
        trace, config = load_trace(args)
        if args.last_row is not None and args.last_row < args.first_row:
            raise CommandError(f"--to {args.last_row} is before --from {args.first_row}")
        if args.first_row >= len(trace):
            raise CommandError(f"--from {args.first_row} is past the last row ({len(trace) - 1})")
    except CommandError as error:
        print(f"autoscaler simulate: {error}", file=sys.stderr)
        return EXIT_USAGE
    end = len(trace) if args.last_row is None else min(len(trace), args.last_row + 1)
    result = run_policy(make_policy("ours", config, trace), trace, config, last_row=end)
    for row in range(args.first_row, end):
        print(format_record(row, result.records[row]))
    return 0
