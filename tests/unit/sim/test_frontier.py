"""The cost frontier: its points, reading it at a cost, the setting for a goal, the command."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
from matplotlib import image

from autoscaler.commands.frontier import goal_share
from autoscaler.sim.frontier import SWEEP_TARGETS, FrontierPoint, cheapest_reaching, pareto_front, unserved_at_cost
from tests.unit.sim.test_commands import CLUSTER_FLAGS, TRACE, run_command


def point(target: float | None, node_steps: int, unserved: float, policy: str = "ours") -> FrontierPoint:
    return FrontierPoint(
        policy=policy,
        target_coverage=target,
        node_steps=node_steps,
        unserved_share=unserved,
        steps_short_share=0.0,
        replica_steps=node_steps,
    )


# 0.9 costs more than 0.95 and serves less: it is off the frontier.
SWEPT = [point(0.8, 100, 0.10), point(0.9, 160, 0.07), point(0.95, 150, 0.04), point(0.99, 200, 0.01)]


def test_pareto_front_drops_points_beaten_on_both_axes() -> None:
    assert [p.target_coverage for p in pareto_front(SWEPT)] == [0.8, 0.95, 0.99]


@pytest.mark.parametrize(
    ("cost", "expected"),
    [(99, None), (100, 0.10), (125, 0.07), (150, 0.04), (175, 0.025), (200, 0.01), (500, 0.01)],
)
def test_unserved_at_cost_interpolates_along_the_frontier(cost: int, expected: float | None) -> None:
    assert unserved_at_cost(SWEPT, cost) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(("goal", "expected"), [(0.05, 0.95), (0.01, 0.99), (0.10, 0.8), (0.005, None)])
def test_cheapest_reaching_names_the_cheapest_setting_within_the_goal(goal: float, expected: float | None) -> None:
    reaching = cheapest_reaching(SWEPT, goal)
    assert (None if reaching is None else reaching.target_coverage) == expected


@pytest.mark.parametrize(("text", "share"), [("1%", 0.01), ("0.5 %", 0.005), ("0.02", 0.02), ("0%", 0.0)])
def test_goal_share_reads_percent_or_fraction(text: str, share: float) -> None:
    assert goal_share(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["100%", "-1%", "abc", "nan", "1.5"])
def test_goal_share_refuses_what_is_not_a_share(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="share"):
        goal_share(text)


def test_frontier_command_writes_a_csv_and_a_png_that_parse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 150 of the trace's rows: past the first refit (24 steps), and 10 runs stay cheap.
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(TRACE.read_text().splitlines()[:151]) + "\n")
    frontier = tmp_path / "frontier.csv"
    argv = ["backtest", str(trace), *CLUSTER_FLAGS, "--out", str(tmp_path / "d.csv")]
    assert run_command([*argv, "--frontier", str(frontier), "--goal-unserved", "50%"]) == 0
    with frontier.open() as handle:
        rows = list(csv.DictReader(handle))
    ours = [row for row in rows if row["policy"] == "ours"]
    assert sorted(float(row["target_coverage"]) for row in ours) == sorted(SWEEP_TARGETS)
    assert {row["policy"] for row in rows} == {"ours", "reactive", "holt-winters", "oracle"}
    for row in rows:
        assert 0.0 <= float(row["unserved_share"]) <= 1.0 and int(row["node_steps"]) > 0
    picture = image.imread(tmp_path / "frontier.png")
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    out = capsys.readouterr().out
    assert "ours at holt-winters' node cost" in out
    assert "goal 50% unserved: --target-coverage" in out


def test_goal_without_frontier_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["backtest", str(TRACE), *CLUSTER_FLAGS, "--out", str(tmp_path / "d.csv"), "--goal-unserved", "1%"]
    assert run_command(argv) == 2
    assert "--goal-unserved needs --frontier" in capsys.readouterr().err
