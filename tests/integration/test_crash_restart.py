"""Kill -9 the daemon at random (seeded) points, restart it, and check nothing that matters is lost.

`python -m autoscaler serve` runs as a subprocess against the real Prometheus. In each
round a KEDA-style client (our generated stubs) registers two targets with GetMetricSpec
and polls GetMetrics; the daemon is killed with SIGKILL at a point drawn from the
seeded generator: right after it announces its ports, while targets warm up, or while
it serves. After every restart:

- GetMetrics answers again without a new GetMetricSpec (KEDA just keeps polling), with
  the same plan as before the crash for the same step;
- the history comes back from Prometheus (warm start): the inspection API shows the
  trace backfilled into Prometheus, the same values in every round;
- no fit worker of a killed daemon outlives it.

The leader Lease handover after a crash is covered by tests/e2e/test_leader_election.py.
"""

from __future__ import annotations

import contextlib
import random
import time
import urllib.error
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from tests.integration.conftest import TraceHistory
from tests.integration.daemon_process import (
    Daemon,
    kill_hard,
    leftovers_after_exit,
    metrics_request,
    scaled_object_ref,
    start_daemon,
    target_detail,
)
from tests.integration.prometheus_server import HISTORY_METRIC, MetricsExporter, PrometheusServer

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

SEED = 20_241_123
KILL_POINTS = ("after-listening", "while-warming", "while-serving")
LIVE_METRIC = "crash_demand"
LIVE_DEMAND = 37.0
NAMESPACE = "crash"
TARGETS = {
    "history": {
        "query": f"sum({HISTORY_METRIC})",
        "capacityPerReplica": "10",
        "step": "60s",
        "leadTime": "120s",
        "historyWindow": "6h",
        "model": "naive",
    },
    "live": {
        "query": f"sum({LIVE_METRIC})",
        "capacityPerReplica": "10",
        "step": "10s",
        "leadTime": "20s",
        "historyWindow": "1h",
        "model": "naive",
    },
}
ANSWER_TIMEOUT_SECONDS = 60.0


def request_for(name: str) -> pb2.GetMetricsRequest:
    return metrics_request(NAMESPACE, name, TARGETS[name])


def first_answer(stub: pb2_grpc.ExternalScalerStub, daemon: Daemon, name: str) -> tuple[float, int]:
    """Poll GetMetrics as KEDA does until it answers (UNAVAILABLE while warming is fine);
    (the step the plan was decided for, the plan), read while that step stayed current."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
    while True:
        before = decided_at(daemon, name)  # None until a GetMetrics registers the target again
        try:
            response = stub.GetMetrics(request_for(name), timeout=10)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, f"{name}: {error.code()}: {error.details()}"
            assert time.monotonic() < deadline, f"{name}: no answer within {ANSWER_TIMEOUT_SECONDS}s"
            time.sleep(0.5)
            continue
        if before is not None and before == decided_at(daemon, name):
            value: int = response.metricValues[0].metricValue
            return before, value


def decided_at(daemon: Daemon, name: str) -> float | None:
    try:
        step = target_detail(daemon, NAMESPACE, name, TARGETS[name], points=1)["decided_at"]
    except urllib.error.HTTPError as error:
        if error.code == 404:  # not registered (again) yet
            return None
        raise
    return None if step is None else float(step)


def history_of(daemon: Daemon, name: str) -> dict[float, float]:
    history = target_detail(daemon, NAMESPACE, name, TARGETS[name], points=1000)["history"]
    return {t: v for t, v in zip(history["timestamps"], history["values"], strict=True) if v is not None}


@dataclass
class CrashRounds:
    plans: dict[str, list[tuple[float, int]]]
    """Per target, (the step decided for, the plan served) in each round that served."""
    histories: list[dict[float, float]]
    leftovers: dict[str, list[int]]  # kill point -> processes still alive 5 s after the kill


@pytest.fixture(scope="module")
def crash_rounds(
    prometheus: PrometheusServer,
    metrics_exporter: MetricsExporter,
    prometheus_history: TraceHistory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CrashRounds]:
    metrics_exporter.set_gauge(LIVE_METRIC, LIVE_DEMAND)
    # The backfilled trace and the scraped gauge are one series. The rounds may cross a
    # step boundary, and a new step must not change the demand: the plan would rightly
    # change with it. So the gauge goes on with the trace's last value meanwhile.
    metrics_exporter.set_gauge(HISTORY_METRIC, prometheus_history.points[-1][1])
    try:
        yield run_rounds(prometheus.url, tmp_path_factory.mktemp("crash"))
    finally:
        metrics_exporter.remove(LIVE_METRIC)
        metrics_exporter.set_gauge(HISTORY_METRIC, 0.0)


def run_rounds(prometheus_url: str, logs: Path) -> CrashRounds:
    rng = random.Random(SEED)
    result = CrashRounds(plans={name: [] for name in TARGETS}, histories=[], leftovers={})
    registered = False
    time.sleep(3)  # a few scrapes of the live series
    # Every kill point once, in a seeded order, then a last run that is stopped cleanly.
    kill_points: list[str | None] = [*rng.sample(KILL_POINTS, len(KILL_POINTS)), None]
    for round_number, kill_point in enumerate(kill_points):
        mark = uuid.uuid4().hex
        daemon = start_daemon(prometheus_url, logs / f"daemon-{round_number}.log", mark)
        try:
            with grpc.insecure_channel(daemon.grpc_address) as channel:
                stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
                if kill_point == "after-listening":
                    time.sleep(rng.uniform(0.0, 1.0))
                    continue
                if not registered:
                    for name, metadata in TARGETS.items():
                        stub.GetMetricSpec(scaled_object_ref(NAMESPACE, name, metadata), timeout=10)
                    registered = True
                if kill_point == "while-warming":
                    # Any call registers the target again, as KEDA's polling does after a restart.
                    for name in TARGETS:
                        with contextlib.suppress(grpc.RpcError):
                            stub.GetMetrics(request_for(name), timeout=0.2)
                    time.sleep(rng.uniform(0.0, 0.5))
                    continue
                for name in TARGETS:
                    result.plans[name].append(first_answer(stub, daemon, name))
                result.histories.append(history_of(daemon, "history"))
                if kill_point == "while-serving":
                    time.sleep(rng.uniform(0.0, 3.0))
        finally:
            if kill_point is None:
                daemon.process.terminate()
                daemon.process.wait(timeout=30)
            else:
                kill_hard(daemon)
            result.leftovers[kill_point or "clean-stop"] = leftovers_after_exit(mark)
    return result


def test_restart_serves_the_same_plan_and_history(crash_rounds: CrashRounds, prometheus_history: TraceHistory) -> None:
    expected_history = dict(prometheus_history.points)
    for name, served in crash_rounds.plans.items():
        assert len(served) >= 2, (name, served)
        assert all(value >= 1 for _, value in served), (name, served)
        # A restarted daemon serves the plan of one that never stopped: the same for the
        # same step (rounds that cross a step boundary may see the plan move on).
        by_step: dict[float, set[int]] = {}
        for step, value in served:
            by_step.setdefault(step, set()).add(value)
        assert all(len(values) == 1 for values in by_step.values()), f"{name}: plan differs for a step: {served}"
    assert crash_rounds.plans["live"][0][1] == int(np.ceil(LIVE_DEMAND / 10))
    for history in crash_rounds.histories:
        common = sorted(set(history) & set(expected_history))
        assert len(common) >= len(expected_history) - 2, "warm start missed history held by Prometheus"
        np.testing.assert_allclose([history[t] for t in common], [expected_history[t] for t in common])
    first = crash_rounds.histories[0]
    for later in crash_rounds.histories[1:]:
        shared = sorted(set(first) & set(later) & set(expected_history))
        np.testing.assert_allclose([first[t] for t in shared], [later[t] for t in shared])


def test_a_clean_stop_leaves_no_process_behind(crash_rounds: CrashRounds) -> None:
    assert crash_rounds.leftovers["clean-stop"] == []


def test_a_killed_daemon_leaves_no_fit_worker_behind(crash_rounds: CrashRounds) -> None:
    killed = {point: pids for point, pids in crash_rounds.leftovers.items() if point != "clean-stop"}
    assert all(pids == [] for pids in killed.values()), killed
