"""`autoscaler backtest --frontier`: sweep our coverage target, write CSV and PNG, read it off.

The sweep reruns our policy at each target of `SWEEP_TARGETS` (the run at
`--target-coverage` is reused); the baselines are the backtest's own runs. The CSV has
one row per run, the PNG draws our frontier with the baselines as points, and the
summary says what ours leaves unserved at Holt-Winters' node cost and, given
`--goal-unserved`, which target reaches the goal at the lowest cost.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from autoscaler.sim.backtest import BacktestConfig, PolicyRun, run_named
from autoscaler.sim.frontier import SWEEP_TARGETS, FrontierPoint, cheapest_reaching, pareto_front, unserved_at_cost
from autoscaler.sim.trace import Trace

CSV_COLUMNS = ("policy", "target_coverage", "coverage_basis", "unserved_share", "steps_short_share", "replica_steps",
               "node_steps")  # fmt: skip
PLOT_EXTRA = "predictive-autoscaler[plot]"
BASELINE_STYLE = {"reactive": ("s", "tab:gray"), "holt-winters": ("^", "tab:orange"), "oracle": ("D", "tab:green")}


def goal_share(text: str) -> float:
    """'1%' or '0.01' -> 0.01; argparse's error names the flag."""
    stripped = text.strip()
    try:
        value = float(stripped[:-1]) / 100.0 if stripped.endswith("%") else float(stripped)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} must be a share such as 1% or 0.01") from error
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a share of demand from 0% to below 100%")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--frontier",
        type=Path,
        metavar="FRONTIER.csv",
        help="also sweep our target coverage; write the frontier as CSV and, beside it, a PNG",
    )
    parser.add_argument(
        "--goal-unserved",
        type=goal_share,
        metavar="SHARE",
        help="with --frontier: say which target leaves at most this share of demand unserved (e.g. 1%%)",
    )


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why these frontier flags cannot run, before any work is done; None when they can."""
    if args.goal_unserved is not None and args.frontier is None:
        return "--goal-unserved needs --frontier"
    if args.frontier is not None and importlib.util.find_spec("matplotlib") is None:
        return f"--frontier draws a PNG with matplotlib: install {PLOT_EXTRA}"
    return None


def _ours_at(target: float, trace: Trace, config: BacktestConfig) -> tuple[float, PolicyRun]:
    run = run_named("ours", trace, replace(config, target_coverage=target))
    return target, replace(run, records=())


def sweep(trace: Trace, config: BacktestConfig, ours: PolicyRun, *, jobs: int) -> list[FrontierPoint]:
    """Ours at every swept target (the run at the configured target reused), cheapest first."""
    targets = [target for target in SWEEP_TARGETS if not math.isclose(target, config.target_coverage)]
    runs = {config.target_coverage: ours}
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(targets))) as pool:
            runs.update(pool.map(_ours_at, targets, [trace] * len(targets), [config] * len(targets)))
    else:
        runs.update(_ours_at(target, trace, config) for target in targets)
    points = [FrontierPoint.of("ours", run.totals, target) for target, run in runs.items()]
    return sorted(points, key=lambda point: point.node_steps)


def write_csv(path: Path, points: list[FrontierPoint], *, coverage_basis: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for point in points:
            target = "" if point.target_coverage is None else f"{point.target_coverage:g}"
            writer.writerow(
                (
                    point.policy,
                    target,
                    coverage_basis if point.target_coverage is not None else "",
                    repr(point.unserved_share),
                    repr(point.steps_short_share),
                    point.replica_steps,
                    point.node_steps,
                )
            )


def write_png(path: Path, ours: list[FrontierPoint], baselines: list[FrontierPoint], *, title: str) -> None:
    import matplotlib  # noqa: PLC0415 - an optional extra, imported only when a plot is asked for

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axes = pyplot.subplots(figsize=(7.0, 4.5), dpi=100)
    try:
        front = pareto_front(ours)
        axes.plot([p.node_steps for p in ours], [100 * p.unserved_share for p in ours], "o", color="tab:blue",
                  alpha=0.4)  # fmt: skip
        axes.plot([p.node_steps for p in front], [100 * p.unserved_share for p in front], "-o", color="tab:blue",
                  label="ours (target coverage)")  # fmt: skip
        for point in ours:
            axes.annotate(f"{point.target_coverage:g}", (point.node_steps, 100 * point.unserved_share),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)  # fmt: skip
        for point in baselines:
            marker, colour = BASELINE_STYLE.get(point.policy, ("x", "black"))
            axes.plot(point.node_steps, 100 * point.unserved_share, marker, color=colour, markersize=8,
                      label=point.policy)  # fmt: skip
        axes.set_xlabel("node-steps (cost)")
        axes.set_ylabel("unserved demand (%)")
        axes.set_title(title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)


def summary_lines(
    ours: list[FrontierPoint], baselines: dict[str, FrontierPoint], *, goal: float | None, basis: str
) -> list[str]:
    lines: list[str] = []
    holt = baselines.get("holt-winters")
    if holt is not None:
        at_cost = unserved_at_cost(ours, holt.node_steps)
        if at_cost is None:
            cheapest = min(point.node_steps for point in ours)
            lines.append(
                f"ours at holt-winters' node cost ({holt.node_steps} node-steps): below the cheapest target swept "
                f"({cheapest} node-steps); holt-winters leaves {100 * holt.unserved_share:.3f}%"
            )
        else:
            ratio = f", {at_cost / holt.unserved_share:.2f}x" if holt.unserved_share > 0 else ""
            lines.append(
                f"ours at holt-winters' node cost ({holt.node_steps} node-steps), on the frontier: "
                f"{100 * at_cost:.3f}% unserved vs holt-winters' {100 * holt.unserved_share:.3f}%{ratio}"
            )
    if goal is not None:
        reaching = cheapest_reaching(ours, goal)
        if reaching is None:
            best = min(ours, key=lambda point: point.unserved_share)
            lines.append(
                f"goal {100 * goal:g}% unserved: no target swept reaches it; the closest is "
                f"--target-coverage {best.target_coverage:g} at {100 * best.unserved_share:.3f}%"
            )
        else:
            lines.append(
                f"goal {100 * goal:g}% unserved: --target-coverage {reaching.target_coverage:g} "
                f"--coverage-basis {basis} leaves {100 * reaching.unserved_share:.3f}% "
                f"at {reaching.node_steps} node-steps (the cheapest target swept that reaches it)"
            )
    return lines


def report(
    args: argparse.Namespace, trace: Trace, config: BacktestConfig, runs: list[PolicyRun], *, jobs: int
) -> list[str]:
    """Run the sweep, write the CSV and PNG, and return the lines to print. OSError propagates."""
    ours_points = sweep(trace, config, runs[0], jobs=jobs)
    baselines = {run.name: FrontierPoint.of(run.name, run.totals) for run in runs[1:]}
    csv_path: Path = args.frontier
    png_path = csv_path.with_suffix(".png")
    write_csv(csv_path, [*ours_points, *baselines.values()], coverage_basis=config.coverage_basis)
    title = f"{args.trace.name}: unserved demand vs node cost ({config.coverage_basis} basis)"
    write_png(png_path, ours_points, list(baselines.values()), title=title)
    lines = [f"frontier written to {csv_path} and {png_path}"]
    return lines + summary_lines(ours_points, baselines, goal=args.goal_unserved, basis=config.coverage_basis)
