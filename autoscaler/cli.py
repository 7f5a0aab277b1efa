"""`autoscaler` command line: demo | serve | backtest | simulate | inspect | keda-query | plan | spec-keys | config."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMANDS = {
    "demo": "autoscaler.commands.demo",
    "serve": "autoscaler.commands.serve",
    "backtest": "autoscaler.commands.backtest",
    "simulate": "autoscaler.commands.simulate",
    "inspect": "autoscaler.commands.inspect",
    "keda-query": "autoscaler.commands.keda_query",
    "plan": "autoscaler.commands.plan",
    "spec-keys": "autoscaler.commands.spec_keys",
    "config": "autoscaler.commands.config",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known `command` only that command's module is imported.

    Command modules pull in statsmodels, gRPC or the Kubernetes client; importing one
    instead of all keeps `autoscaler keda-query` and `autoscaler inspect` quick to start.
    """
    parser = argparse.ArgumentParser(
        prog="autoscaler",
        description="Predictive KEDA external scaler for AI inference workloads.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = [command] if command in COMMANDS else list(COMMANDS)
    for name in chosen:
        importlib.import_module(COMMANDS[name]).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # One BLAS/OpenMP thread per process: fits run in worker processes, and on a small
    # node oversubscribed math threads made a 0.7 s model fit take 36 s.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((argument for argument in arguments if not argument.startswith("-")), None)
    args = build_parser(command).parse_args(arguments)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
