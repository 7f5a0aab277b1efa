"""`autoscaler backtest` and `autoscaler simulate` end to end on a small real trace."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest

from autoscaler.commands import backtest, simulate
from tests.traces import trace_path

TRACE = trace_path("azure_llm2023_conv_rate")  # 349 rows, 10-s steps
CLUSTER_FLAGS = [
    "--step-seconds", "10", "--capacity", "5", "--pod-startup-seconds", "60",
    "--node-startup-seconds", "120", "--pods-per-node", "4",
]  # fmt: skip


def run_command(argv: list[str]) -> int:
    """What autoscaler.cli does: one subparser per command module, then module.run(args)."""
    parser = argparse.ArgumentParser(prog="autoscaler")
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {"backtest": backtest, "simulate": simulate}
    for module in modules.values():
        module.add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args))


def test_backtest_writes_one_decision_per_row_and_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decisions.csv"
    assert run_command(["backtest", str(TRACE), *CLUSTER_FLAGS, "--out", str(out), "--progress"]) == 0
    captured = capsys.readouterr()
    with out.open() as handle:
        rows = list(csv.reader(handle))
    trace_rows = TRACE.read_text().splitlines()[1:]
    assert rows[0] == ["timestamp", "demand", "forecast", "desired_replicas", "buffer_replicas"]
    assert len(rows) - 1 == len(trace_rows) == 349
    for written, source in zip(rows[1:], trace_rows, strict=True):
        assert written[:2] == source.split(",")
        assert int(written[3]) >= 1 and int(written[4]) >= 0
    assert rows[1][2] == ""  # cold start: no forecast yet
    assert any(row[2] for row in rows[1:])  # predictive later on
    for name in ("ours", "reactive", "holt-winters", "oracle", "coverage achieved by the plans"):
        assert name in captured.out
    assert "unserved %" in captured.out and "node-steps" in captured.out
    assert "backtest [" in captured.err and "100%" in captured.err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("timestamp,value\n0,1\n10,2\n20,nan\n", "row 4: value 'nan' is not finite"),
        ("time,value\n0,1\n", "row 1: header must be"),
        ("timestamp,value\n0,1\n10,2\n25,3\n", "row 4: timestamp 25 is 15s after the previous row"),
        ("", "empty trace"),
    ],
)
def test_bad_trace_exits_2_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, fragment: str
) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(content)
    status = run_command(["backtest", str(trace), *CLUSTER_FLAGS, "--out", str(tmp_path / "d.csv")])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith(f"autoscaler backtest: {trace}: ")
    assert fragment in error
    assert not (tmp_path / "d.csv").exists()


def test_missing_trace_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_command(["backtest", str(tmp_path / "none.csv"), *CLUSTER_FLAGS, "--out", str(tmp_path / "d.csv")])
    assert status == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--target-coverage", "1.5"], ["--capacity", "-3"], ["--pods-per-node", "0"]])
def test_bad_flags_are_usage_errors(tmp_path: Path, flag: list[str]) -> None:
    flags = [*CLUSTER_FLAGS, *flag]
    with pytest.raises(SystemExit) as caught:
        run_command(["backtest", str(TRACE), *flags, "--out", str(tmp_path / "d.csv")])
    assert caught.value.code == 2


def test_simulate_prints_the_chosen_rows_with_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(["simulate", str(TRACE), *CLUSTER_FLAGS, "--from", "5", "--to", "60"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(5, 61))
    assert "cold start" in lines[0]
    assert "forecast p95" in lines[-1]
    assert all("demand=" in line and "replicas=" in line and " | " in line for line in lines)


def test_simulate_rejects_an_empty_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(["simulate", str(TRACE), *CLUSTER_FLAGS, "--from", "10", "--to", "5"]) == 2
    assert "--to 5 is before --from 10" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [([], False), (["--daily-rebuild"], True)])
def test_daily_rebuild_is_asked_for_by_name(tmp_path: Path, flags: list[str], expected: bool) -> None:
    """Off by default (a replay a day per target costs several times the backtest); on, ours rebuilds."""
    parser = argparse.ArgumentParser(prog="autoscaler")
    backtest.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["backtest", str(TRACE), *CLUSTER_FLAGS, *flags, "--out", str(tmp_path / "d.csv")])
    _, config = backtest.load_trace(args)
    assert config.daily_rebuild is expected
