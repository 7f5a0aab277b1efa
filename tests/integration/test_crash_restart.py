"""Kill -9 the daemon at random (seeded) points, restart it, and check nothing that matters is lost.

`python -m autoscaler serve` runs as a subprocess against the real Prometheus. In each
round a KEDA-style client (our generated stubs) registers two targets with GetMetricSpec
and polls GetMetrics; the daemon is killed with SIGKILL at a point drawn from the
seeded generator: right after it announces its ports, while targets warm up, or while
it serves. After every restart:

- GetMetrics answers again without a new GetMetricSpec (KEDA just keeps polling), with
  the same plan as before the crash;
- the history comes back from Prometheus (warm start): the inspection API shows the
  trace backfilled into Prometheus, the same values in every round;
- no fit worker of a killed daemon outlives it.

The leader Lease handover after a crash is covered by tests/e2e/test_leader_election.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from tests.integration.conftest import TraceHistory
from tests.integration.prometheus_server import HISTORY_METRIC, MetricsExporter, PrometheusServer

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
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
# Marks the daemon's processes (fit workers inherit it), so leftovers can be found.
MARK_VARIABLE = "AUTOSCALER_CRASH_TEST_RUN"


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    grpc_address: str
    http_url: str
    log: Path


def start_daemon(prometheus_url: str, log: Path, mark: str) -> Daemon:
    """Start the daemon with its log in `log`; return once its JSON "listening" line is there."""
    command = [
        sys.executable, "-m", "autoscaler", "serve", "--prometheus-url", prometheus_url,
        "--grpc-port", "0", "--http-port", "0", "--host", "127.0.0.1", "--log-format", "json",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO, stdout=sink, stderr=sink, env={**os.environ, MARK_VARIABLE: mark})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("msg") == "listening":
                return Daemon(process, record["grpc"], record["http"], log)
        assert process.poll() is None, f"daemon exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"no listening line within 60 s:\n{log.read_text()[-3000:]}")


def kill_hard(daemon: Daemon) -> None:
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)


def processes_marked(mark: str) -> list[int]:
    marked = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARK_VARIABLE}={mark}".encode() in environment.split(b"\0"):
            marked.append(int(entry.name))
    return marked


def request_for(name: str) -> pb2.GetMetricsRequest:
    metadata = TARGETS[name]
    key = target_key(NAMESPACE, name, metadata)
    ref = pb2.ScaledObjectRef(name=name, namespace=NAMESPACE, scalerMetadata=metadata)
    return pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name_for(key, parse_spec(metadata)))


def first_answer(stub: pb2_grpc.ExternalScalerStub, name: str) -> int:
    """Poll GetMetrics as KEDA does until it answers; UNAVAILABLE while warming is fine."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
    while True:
        try:
            response = stub.GetMetrics(request_for(name), timeout=10)
        except grpc.RpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE, f"{name}: {error.code()}: {error.details()}"
            assert time.monotonic() < deadline, f"{name}: no answer within {ANSWER_TIMEOUT_SECONDS}s"
            time.sleep(0.5)
            continue
        value: int = response.metricValues[0].metricValue
        return value


def history_of(daemon: Daemon, name: str) -> dict[float, float]:
    metadata = TARGETS[name]
    digest = target_key(NAMESPACE, name, metadata).metadata_digest
    url = f"{daemon.http_url.rstrip('/')}/api/v1/targets/{NAMESPACE}/{name}/{digest}?points=1000"
    with urllib.request.urlopen(url, timeout=10) as response:
        history = json.load(response)["history"]
    return {t: v for t, v in zip(history["timestamps"], history["values"], strict=True) if v is not None}


@dataclass
class CrashRounds:
    plans: dict[str, list[int]]
    histories: list[dict[float, float]]
    leftovers: dict[str, list[int]]  # kill point -> processes still alive 5 s after the kill


def leftovers_after_exit(mark: str) -> list[int]:
    """Processes of a dead daemon still alive after a grace period; they are killed here."""
    deadline = time.monotonic() + 5
    while (marked := processes_marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in marked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return marked


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
                        ref = pb2.ScaledObjectRef(name=name, namespace=NAMESPACE, scalerMetadata=metadata)
                        stub.GetMetricSpec(ref, timeout=10)
                    registered = True
                if kill_point == "while-warming":
                    # Any call registers the target again, as KEDA's polling does after a restart.
                    for name in TARGETS:
                        with contextlib.suppress(grpc.RpcError):
                            stub.GetMetrics(request_for(name), timeout=0.2)
                    time.sleep(rng.uniform(0.0, 0.5))
                    continue
                for name in TARGETS:
                    result.plans[name].append(first_answer(stub, name))
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
        assert all(value >= 1 for value in served), (name, served)
        assert len(set(served)) == 1, f"{name}: plan differs across restarts: {served}"
    assert crash_rounds.plans["live"][0] == int(np.ceil(LIVE_DEMAND / 10))
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
