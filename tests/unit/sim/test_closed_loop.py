"""The closed-loop backtest: policies see only scrapes, and a symptom-driven plan still scales up."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscaler.cli import main
from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.sim.closed_loop import (
    BUNDLES,
    KEDA,
    ORACLE,
    OURS,
    ClosedLoopConfig,
    bundle_rows,
    closed_loop_jobs,
    closed_loop_table,
    run_closed_loop,
    run_named_closed_loop,
)
from autoscaler.sim.policies import PolicyDecision
from autoscaler.sim.trace import Trace
from tests.reference_cluster import reference_config
from tests.traces import read_trace, trace_path

TWO_DAYS_OF_FIVE_MINUTES = 576


def nab_trace() -> Trace:
    """Two days of the NAB load-balancer trace: spiky, so replicas fall short at times."""
    trace = read_trace(trace_path("nab_elb_request_count"))
    rows = slice(0, TWO_DAYS_OF_FIVE_MINUTES)
    return Trace(timestamps=trace.timestamps[rows], values=trace.values[rows], step_seconds=trace.step_seconds)


def config_for(trace: Trace, **overrides: float) -> ClosedLoopConfig:
    return ClosedLoopConfig(backtest=reference_config(trace, model="naive"), **overrides)


class Recorder:
    """A policy that keeps min replicas and records what it was shown, and when."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[StepSignals] = []
        self.decided: list[tuple[float, int]] = []  # (now, scrapes seen by then)

    def decide(self, now: float, replicas: ReplicaCounts) -> PolicyDecision:
        self.decided.append((now, len(self.seen)))
        return PolicyDecision(replicas=2, buffer_replicas=0, forecast=math.nan)

    def observe(self, signals: StepSignals) -> None:
        self.seen.append(signals)


@pytest.mark.parametrize(("delay_seconds", "lag_rows"), [(0.0, 1), (600.0, 3)])
def test_a_policy_sees_only_earlier_scrapes_of_its_bundle(delay_seconds: float, lag_rows: int) -> None:
    trace = nab_trace()
    recorder = Recorder()
    run_closed_loop(
        recorder, trace, config_for(trace, scrape_delay_seconds=delay_seconds), bundle="completions+waiting"
    )
    for row, (now, seen) in enumerate(recorder.decided):
        assert now == trace.timestamps[row]
        assert seen == max(0, row + 1 - lag_rows)
        assert all(scrape.timestamp < now for scrape in recorder.seen[:seen])
    assert {frozenset(scrape.values) for scrape in recorder.seen} == {
        frozenset({SignalKind.COMPLETIONS, SignalKind.WAITING})
    }
    # Two replicas cannot serve the peaks: completions are capped where arrivals are not.
    completions = np.array([scrape.values[SignalKind.COMPLETIONS] for scrape in recorder.seen])
    assert completions.max() < trace.values.max()


def test_ours_scales_up_on_completions_and_a_queue_where_keda_does_not() -> None:
    trace = nab_trace()
    config = config_for(trace)
    ours = run_named_closed_loop(OURS, "completions+waiting", trace, config)
    keda = run_named_closed_loop(KEDA, "completions+waiting", trace, config)
    oracle = run_named_closed_loop(ORACLE, "arrivals", trace, config)
    assert ours.serving.lost_share < 0.5 * keda.serving.lost_share
    assert oracle.serving.lost_share == 0.0
    assert ours.serving.demand == pytest.approx(float(trace.values.sum()) * trace.step_seconds)
    assert ours.node_steps > 0 and oracle.node_steps > 0


def test_utilisation_in_closed_loop_does_not_run_away() -> None:
    """The issue's runaway: a plan multiplying its own last plan by the utilisation. Now bounded."""
    trace = nab_trace()
    config = config_for(trace)
    ours = run_named_closed_loop(OURS, "utilisation", trace, config)
    oracle = run_named_closed_loop(ORACLE, "arrivals", trace, config)
    assert ours.node_steps <= 3 * oracle.node_steps
    assert ours.serving.lost_share < 0.2


def test_the_table_has_four_rows_per_bundle() -> None:
    trace = nab_trace()
    config = config_for(trace)
    bundles = ("arrivals", "waiting")
    runs = [run_named_closed_loop(name, bundle, trace, config) for name, bundle in closed_loop_jobs(bundles)]
    table = closed_loop_table(runs, bundles).splitlines()
    assert "lost %" in table[0]
    assert len(table) == 2 + 4 * len(bundles)
    assert [row.split()[1] for row in table[2:6]] == ["ours", "keda/hpa", "ours", "oracle"]
    assert table[-1].endswith("1.00x")
    assert set(BUNDLES) == {"arrivals", "completions+waiting", "utilisation", "waiting"}


def test_backtest_closed_loop_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    trace = trace_path("azure_llm2023_conv_rate")  # 349 rows, 10-s steps
    flags = [
        "--step-seconds", "10", "--capacity", "5", "--pod-startup-seconds", "60",
        "--node-startup-seconds", "120", "--pods-per-node", "4", "--model", "naive",
    ]  # fmt: skip
    assert main(["backtest", str(trace), *flags, "--closed-loop", "--bundle", "utilisation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "closed loop, patience 120s, scrape delay 0s" in lines[0]
    assert [line.split()[:2] for line in lines[3:]] == [
        ["utilisation", "ours"],
        ["utilisation", "keda/hpa"],
        ["utilisation", "ours"],
        ["utilisation", "oracle"],
    ]
    assert main(["backtest", str(trace), *flags]) == 2
    assert "--out DECISIONS.csv is required (except with --closed-loop)" in capsys.readouterr().err
    assert main(["backtest", str(trace), *flags, "--closed-loop", "--drain-time-seconds", "5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "autoscaler backtest: these flags give an invalid arrivals target: "
        "scalerMetadata key 'drainTime': '5.0s' must be between 10s and 3600s"
    ]


def test_the_utilisation_bundle_is_measured_against_an_oracle_at_its_target() -> None:
    """At targetUtilization 0.8 the user asks for replicas 80 % busy: the oracle provisions
    that too, so the ratio does not count the headroom asked for as waste."""
    trace = nab_trace()
    config = config_for(trace)
    runs = [run_named_closed_loop(name, bundle, trace, config) for name, bundle in closed_loop_jobs(("utilisation",))]
    oracle_at_target = bundle_rows(runs, "utilisation")[-1]
    oracle_at_capacity = run_named_closed_loop(ORACLE, "arrivals", trace, config)
    assert oracle_at_target.bundle == "utilisation"
    assert oracle_at_target.replica_steps > 1.1 * oracle_at_capacity.replica_steps
