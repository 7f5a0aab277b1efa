from __future__ import annotations

import itertools
import math
import warnings
from collections import deque
from dataclasses import replace

import numpy as np
import pytest
from statsmodels.tsa.holtwinters import ExponentialSmoothing

from autoscaler.planner.replay import rebuild_boundary
from autoscaler.sim.backtest import BacktestConfig, make_policy, run_policy
from autoscaler.sim.policies import OraclePolicy, OursPolicy, ReactivePolicy, _AdditiveHoltWinters
from autoscaler.sim.trace import Trace
from tests.reference_cluster import reference_config
from tests.traces import read_trace, trace_path


def real_trace(name: str, rows: int) -> Trace:
    trace = read_trace(trace_path(name))
    return replace(trace, timestamps=trace.timestamps[:rows], values=trace.values[:rows])


def config_for(trace: Trace, *, model: str = "auto") -> BacktestConfig:
    return reference_config(trace, model=model)


ELB = "nab_elb_request_count.csv"
TAXI = "nab_nyc_taxi.csv"  # a strong daily cycle at 30-minute steps: 96 rows are two days


@pytest.mark.parametrize(
    ("policy", "model", "trace_name", "rows", "cut"),
    [
        ("ours", "auto", ELB, 260, 200),
        ("reactive", "auto", ELB, 260, 200),
        ("holt-winters", "auto", ELB, 700, 640),  # HW fits after 2 days (576 rows)
        ("ours", "mstl", TAXI, 260, 200),  # refitted on 192 rows (4 days): its daily profile plans
    ],
)
def test_a_decision_never_sees_its_own_row_or_the_future(
    policy: str, model: str, trace_name: str, rows: int, cut: int
) -> None:
    trace = real_trace(trace_name, rows)
    assert_no_future_leak(policy, trace, config_for(trace, model=model), cut)


def test_the_daily_rebuild_never_sees_its_own_row_or_the_future() -> None:
    """Rebuilt at the boundaries of rows 95 and 191 before the cut (every 96 steps at 30-minute steps)."""
    trace = real_trace(TAXI, 260)
    assert_no_future_leak("ours", trace, replace(config_for(trace, model="mstl"), daily_rebuild=True), 200)


def assert_no_future_leak(policy: str, trace: Trace, config: BacktestConfig, cut: int) -> None:
    """Rewrite rows t.. with other values: every decision up to row t must be unchanged."""
    rng = np.random.default_rng(11)
    future = trace.values.copy()
    future[cut:] = rng.uniform(0, 5 * trace.values.max(), size=future.size - cut)
    changed = replace(trace, values=future)
    original = run_policy(make_policy(policy, config, trace), trace, config).records
    rewritten = run_policy(make_policy(policy, config, changed), changed, config).records
    decisions = [(r.desired_replicas, r.buffer_replicas, r.forecast) for r in original]
    changed_decisions = [(r.desired_replicas, r.buffer_replicas, r.forecast) for r in rewritten]
    assert all(
        a[:2] == b[:2] and (a[2] == b[2] or (math.isnan(a[2]) and math.isnan(b[2])))
        for a, b in zip(decisions[: cut + 1], changed_decisions[: cut + 1], strict=True)
    )
    assert decisions[cut + 1 :] != changed_decisions[cut + 1 :]  # the future did change something


def test_the_daily_rebuild_replaces_the_pipeline_once_a_boundary_and_keeps_one_window() -> None:
    """As every daemon replica does: at each new boundary of the refit grid (daily, or every
    96 steps: 2 days at 30-minute steps; not at the first, which a daemon meets in its warm
    start) the pipeline becomes the replay of the window that ends there; the steps kept
    never exceed that window and one grid interval."""
    trace = real_trace(TAXI, 48 * 10)  # ten days of 30-minute steps; the window is 7 days
    config = replace(config_for(trace, model="naive"), daily_rebuild=True)
    policy = make_policy("ours", config, trace)
    assert isinstance(policy, OursPolicy) and policy.daily_rebuild is not None
    spec, phase = config.spec(), policy.pipeline.refit_phase_steps
    pipelines, kept = [], []
    for now, value in zip(trace.timestamps, trace.values, strict=True):
        policy.decide(float(now), current_replicas=1)
        pipelines.append(policy.pipeline)
        kept.append(len(policy.daily_rebuild))
        policy.observe(float(now), float(value))
    boundaries = {rebuild_boundary(spec, refit_phase_steps=phase, at=float(now)) for now in trace.timestamps[:-1]}
    replaced = sum(1 for before, after in itertools.pairwise(pipelines) if after is not before)
    assert replaced == len(boundaries) - 1 == 4
    assert max(kept) <= spec.history_points + 96


def test_holt_winters_recursion_reproduces_statsmodels() -> None:
    rng = np.random.default_rng(2)
    season = 24
    steps = np.arange(season * 6)
    values = 50 + 0.05 * steps + 10 * np.sin(2 * np.pi * steps / season) + rng.normal(0, 1, steps.size)
    model = _AdditiveHoltWinters.fit(values, season)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ExponentialSmoothing(
            values, trend="add", seasonal="add", seasonal_periods=season, initialization_method="heuristic"
        ).fit()
    assert np.allclose(model.forecast(5), result.forecast(5))
    replay = _AdditiveHoltWinters(
        alpha=model.alpha,
        beta=model.beta,
        gamma=model.gamma,
        level=float(result.params["initial_level"]),
        trend=float(result.params["initial_trend"]),
        seasonals=deque(float(v) for v in result.params["initial_seasons"]),
    )
    for value in values:
        replay.update(float(value))
    assert replay.level == pytest.approx(model.level)
    assert replay.trend == pytest.approx(model.trend)
    assert np.allclose(replay.forecast(season), model.forecast(season))


def test_holt_winters_refit_from_the_previous_parameters_matches_a_cold_fit() -> None:
    rng = np.random.default_rng(3)
    season = 24
    steps = np.arange(season * 7)
    values = 50 + 0.05 * steps + 10 * np.sin(2 * np.pi * steps / season) + rng.normal(0, 1, steps.size)
    previous = _AdditiveHoltWinters.fit(values[:-season], season)
    warm = _AdditiveHoltWinters.fit(values, season, previous=previous)
    cold = _AdditiveHoltWinters.fit(values, season)
    assert (warm.alpha, warm.beta, warm.gamma) == pytest.approx((cold.alpha, cold.beta, cold.gamma), abs=1e-3)
    assert np.allclose(warm.forecast(season), cold.forecast(season), rtol=1e-3)


def test_reactive_policy_acts_on_the_previous_row_and_holds_scale_down() -> None:
    trace = Trace(
        timestamps=np.arange(10, dtype=np.float64) * 60,
        values=np.array([10, 100, 100, 10, 10, 10, 10, 10, 10, 10.0]),
        step_seconds=60.0,
    )
    config = BacktestConfig(
        step_seconds=60.0, capacity_per_replica=10.0, pod_startup_seconds=0.0, node_startup_seconds=0.0, pods_per_node=4
    )
    policy = make_policy("reactive", config, trace)
    assert isinstance(policy, ReactivePolicy)
    desired = [record.desired_replicas for record in run_policy(policy, trace, config).records]
    # row 1's spike is acted on at row 2; the 10 replicas are held for 300 s after row 3
    assert desired == [1, 1, 10, 10, 10, 10, 10, 10, 1, 1]


def test_oracle_serves_everything_on_a_ramp() -> None:
    values = np.concatenate([np.full(20, 10.0), np.linspace(10, 400, 60), np.full(20, 50.0)])
    trace = Trace(timestamps=np.arange(values.size, dtype=np.float64) * 60, values=values, step_seconds=60.0)
    config = BacktestConfig(
        step_seconds=60.0,
        capacity_per_replica=10.0,
        pod_startup_seconds=180.0,
        node_startup_seconds=300.0,
        pods_per_node=4,
    )
    policy = make_policy("oracle", config, trace)
    assert isinstance(policy, OraclePolicy)
    run = run_policy(policy, trace, config)
    assert run.totals.unserved == 0.0
    reactive = run_policy(make_policy("reactive", config, trace), trace, config)
    assert reactive.totals.unserved > 0.0
