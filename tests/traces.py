"""Where tests and benchmarks find real traces: both folders are inside the repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoscaler.sim.trace import Trace, parse_trace

REPOSITORY = Path(__file__).resolve().parents[1]
TEST_TRACES = REPOSITORY / "tests" / "data" / "traces"
"""Copies of the development traces the tests need (provenance in its NOTICE.md)."""
DEMO_TRACES = REPOSITORY / "autoscaler" / "demo"
"""The two traces the package bundles for `autoscaler demo`."""
TRACE_DIRS = (TEST_TRACES, DEMO_TRACES)


def trace_path(name: str) -> Path:
    """The CSV file of trace `name` (with or without `.csv`), from the first folder that has it."""
    file_name = name if name.endswith(".csv") else f"{name}.csv"
    for directory in TRACE_DIRS:
        path = directory / file_name
        if path.is_file():
            return path
    raise FileNotFoundError(f"trace {file_name} is in none of {', '.join(map(str, TRACE_DIRS))}")


def read_trace(path: Path) -> Trace:
    """The trace in CSV file `path`."""
    with path.open() as handle:
        return parse_trace(handle)


def add_traces_option(parser: argparse.ArgumentParser) -> None:
    """A benchmark's `--traces DIR`: the repository's copies unless another folder is named."""
    parser.add_argument(
        "--traces",
        type=_directory,
        default=TEST_TRACES,
        metavar="DIR",
        help=f"folder of trace CSVs (timestamp,value); default {TEST_TRACES.relative_to(REPOSITORY)}",
    )


def trace_in(directory: Path, file_name: str) -> Path:
    """`directory/file_name`, or an exit that names `--traces` when the folder lacks it."""
    path = directory / file_name
    if not path.is_file():
        raise SystemExit(f"--traces {directory}: {file_name} is not there; name a folder that has it")
    return path


def _directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    return path
