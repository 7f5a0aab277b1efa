"""`autoscaler` command line: demo | serve | backtest | simulate | inspect | keda-query | spec-keys."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "demo": "autoscaler.commands.demo",
    "serve": "autoscaler.commands.serve",
    "backtest": "autoscaler.commands.backtest",
    "simulate": "autoscaler.commands.simulate",
    "inspect": "autoscaler.commands.inspect",
    "keda-query": "autoscaler.commands.keda_query",
    "spec-keys": "autoscaler.commands.spec_keys",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Predictive KEDA external scaler for AI inference workloads.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
