"""The full chain on real KEDA: ScaledObject -> our scaler -> HPA -> replicas ahead of a spike.

Two Deployments on kwok GPU nodes take the same replayed traffic (the morning rise of
Tuesday 11 July 1995 in the NASA HTTP trace, compressed so that a trace day lasts one
wall-clock hour):

- ``predictive``: a ScaledObject whose external trigger is our daemon on loopback;
- ``reactive``: a ScaledObject with KEDA's built-in ``prometheus`` trigger on the same
  query, with the same capacity per replica as its threshold.

KEDA's operator and metrics adapter run against the control plane, the HPAs are KEDA's,
and kube-controller-manager's HPA controller does the scaling; kwok marks a pod ready
``POD_READY_DELAY_S`` after it is bound. The test records both Deployments over time,
asserts the lead and writes a plot. A second test stops Prometheus, checks that KEDA
applies the ScaledObject's fallback replicas while our scaler answers UNAVAILABLE, and
that everything returns to the plan once Prometheus is back.

Run: ``.venv/bin/pytest -m e2e tests/e2e/test_keda_chain.py`` (needs the KEDA build,
``tests/harness/build_keda.sh``; see docs/keda-chain.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoscaler.domain.types import FloatArray
from tests.e2e.keda_crds import install_crds
from tests.e2e.kube_chain import (
    NAMESPACE,
    Kube,
    SecondlyPoller,
    daemon_command,
    daemon_target,
    gpu_deployment,
    hpa_control_plane,
    http_ok,
    scaled_object,
)
from tests.e2e.replay import CompressedTrace, TraceReplay, load_compressed_trace
from tests.harness.cluster import BuildError, ControlPlane, HarnessError, build_binaries, free_port
from tests.harness.keda import Keda, KedaBinaries, ensure_keda_binaries
from tests.integration.prometheus_server import MetricsExporter, PrometheusServer

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_DIR = REPO_ROOT / "artifacts" / "keda-chain"
DOC_IMAGE = REPO_ROOT / "docs" / "images" / "keda-chain-lead.png"
#: Set to 1 to refresh the README's copy of the plot.
UPDATE_DOC_IMAGE_ENV = "PA_UPDATE_DOC_IMAGES"

PREDICTIVE = "predictive"
REACTIVE = "reactive"
METRIC = "nasa_http_requests"
QUERY = f"sum({METRIC})"

# The trace: 1-minute NASA HTTP requests summed into 4-minute bins, one bin per 10 s of
# wall time (speed-up 24: a trace day is one wall hour, a trace minute 2.5 s).
TRACE = "nasa_http_jul95"
BIN_STEPS = 4
WALL_STEP_S = 10.0
REPLAY_DAY = 10  # Tuesday 11 July 1995 (day 0 is Saturday 1 July)
REPLAY_FROM_HOUR = 6 + 20 / 60  # quiet before the rise at about 07:30
REPLAY_TO_HOUR = 8 + 20 / 60
HISTORY_DAYS = 7  # backfilled: the week before, i.e. seven wall hours
CAPACITY_PER_REPLICA = 100.0  # requests per 4-minute bin one replica serves
MAX_REPLICAS = 10

POD_READY_DELAY_S = 10.0  # 4 trace minutes: a model server loading its weights
HPA_SYNC_PERIOD_S = 2
LEAD_TIME_S = 30  # pod start + HPA sync + KEDA, with margin
FALLBACK_REPLICAS = 6
#: The predictive Deployment leaves at most this share of what the reactive one leaves
#: unserved (measured: 1.1 % against 9.4 % of the demand; simulated over every rebuild
#: window, at most 0.5 % against 7.1 %).
UNSERVED_RATIO_BOUND = 0.5
GPU_NODES = 6
GPUS_PER_NODE = 4


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Chain:
    cluster: ControlPlane
    keda: Keda
    prometheus: PrometheusServer
    exporter: MetricsExporter
    replay: TraceReplay
    daemon_grpc_port: int
    daemon_http_port: int
    daemon_log: Path


@pytest.fixture(scope="module")
def keda_binaries(tmp_path_factory: pytest.TempPathFactory) -> KedaBinaries:
    log = tmp_path_factory.mktemp("keda-build") / "build.log"
    try:
        return ensure_keda_binaries(log_file=log)
    except BuildError as error:
        pytest.fail(f"KEDA build failed (log {log}):\n{error}", pytrace=False)


@pytest.fixture(scope="module")
def trace() -> CompressedTrace:
    return load_compressed_trace(TRACE, bin_steps=BIN_STEPS, wall_step_seconds=WALL_STEP_S)


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory, keda_binaries: KedaBinaries, trace: CompressedTrace
) -> Iterator[Chain]:
    try:
        binaries = build_binaries()
    except BuildError as error:
        pytest.fail(f"control-plane build failed:\n{error}", pytrace=False)
    cluster = hpa_control_plane(
        binaries,
        tmp_path_factory.mktemp("chain-control-plane"),
        pod_ready_delay_s=POD_READY_DELAY_S,
        hpa_sync_period_s=HPA_SYNC_PERIOD_S,
    )
    workdir = tmp_path_factory.mktemp("chain")
    keda = Keda(cluster, keda_binaries, workdir / "keda")
    exporter = MetricsExporter()
    prometheus = PrometheusServer(workdir / "prometheus")
    daemon: subprocess.Popen[bytes] | None = None
    replay = TraceReplay.of_hours(trace, exporter, METRIC, day=REPLAY_DAY, hours=(REPLAY_FROM_HOUR, REPLAY_TO_HOUR))
    try:
        cluster.start()
        nodes = cluster.create_fake_gpu_nodes(GPU_NODES)
        cluster.wait_for_nodes_ready(nodes)
        with cluster.api_client() as api:
            install_crds(api, keda_binaries.version)
        keda.start()
        exporter.start()
        prometheus.scrape_target = exporter.address
        start_at = time.time() + 2 * WALL_STEP_S  # room for Prometheus to start
        prometheus.backfill([replay.history(end=start_at - WALL_STEP_S, steps=HISTORY_DAYS * trace.steps_per_day)])
        replay.start(at=start_at)
        prometheus.start()
        grpc_port, http_port = free_port(), free_port()
        daemon_log = workdir / "daemon.log"
        with daemon_log.open("wb") as log:
            command = daemon_command(prometheus_url=prometheus.url, grpc_port=grpc_port, http_port=http_port)
            daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        _wait_for(f"daemon /readyz on {http_port}", lambda: http_ok(f"http://127.0.0.1:{http_port}/readyz"), 60)
        yield Chain(cluster, keda, prometheus, exporter, replay, grpc_port, http_port, daemon_log)
    except HarnessError as error:
        pytest.fail(f"the KEDA chain failed to start: {error}\n{_keda_logs(keda)}", pytrace=False)
    finally:
        replay.stop()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
        prometheus.stop()
        exporter.stop()
        keda.stop()
        cluster.stop()


# ---------------------------------------------------------------------------- helpers


def _wait_for(what: str, check: Any, timeout_s: float, interval_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def _keda_logs(keda: Keda) -> str:
    return "\n".join(f"--- {name} ---\n{tail[-2500:]}" for name, tail in keda.logs().items())


def _fast_hpa_behaviour() -> dict[str, Any]:
    """Let the HPA follow its metric at once both ways: the test compares metric sources."""
    immediate = {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": MAX_REPLICAS, "periodSeconds": 1}],
    }
    return {"scaleUp": immediate, "scaleDown": immediate}


def _scaled_object(name: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return scaled_object(name, trigger=trigger, max_replicas=MAX_REPLICAS, behavior=_fast_hpa_behaviour())


def predictive_trigger(grpc_port: int) -> dict[str, Any]:
    return {
        "type": "external",
        "metadata": {
            "scalerAddress": f"127.0.0.1:{grpc_port}",
            "query": QUERY,
            "metricKind": "load",
            "capacityPerReplica": f"{CAPACITY_PER_REPLICA:g}",
            "step": f"{WALL_STEP_S:g}s",
            "leadTime": f"{LEAD_TIME_S}s",
            "nodeLeadTime": f"{2 * LEAD_TIME_S}s",
            "historyWindow": f"{HISTORY_DAYS + 1}h",  # a trace day is a wall hour
            "minReplicas": "1",
            "maxReplicas": str(MAX_REPLICAS),
            "scaleDownStabilization": "60s",
            "staleAfter": "30s",
            # The morning rise must be served, not 95 % of steps: the warm start replays the
            # week of history, and a calibrator that saw the quiet hours over-covered at 0.95
            # lowers the quantile (offset -74 here) until the rise is one of the 5 % it misses.
            "targetCoverage": "0.99",
        },
    }


def _reactive_trigger(prometheus_url: str) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "metadata": {"serverAddress": prometheus_url, "query": QUERY, "threshold": f"{CAPACITY_PER_REPLICA:g}"},
    }


def _grpc_calls(http_port: int, method: str, code: str) -> float:
    """The daemon's own count of external-scaler calls, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("predictive_autoscaler_grpc_requests_total{"):
            continue
        if f'method="{method}"' in line and f'code="{code}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True)
class Sample:
    at: float
    demand: float
    predictive: tuple[int, int]
    reactive: tuple[int, int]
    planned: int | None
    buffer: int | None


class Recorder(SecondlyPoller):
    """Samples both Deployments and the daemon's plan once a second, in a thread."""

    def __init__(self, chain: Chain, kube: Kube) -> None:
        super().__init__("keda-chain-recorder")
        self._chain, self._kube = chain, kube
        self.samples: list[Sample] = []
        self.errors: list[str] = []

    def poll(self) -> None:
        now = time.time()
        try:
            target = daemon_target(self._chain.daemon_http_port, PREDICTIVE) or {}
            self.samples.append(
                Sample(
                    at=now,
                    demand=self._chain.replay.demand_at(now),
                    predictive=self._kube.replicas(PREDICTIVE),
                    reactive=self._kube.replicas(REACTIVE),
                    planned=target.get("planned_replicas"),
                    buffer=target.get("buffer_replicas"),
                )
            )
        except Exception as error:  # a failed poll is recorded, not fatal: the next one may work
            self.errors.append(repr(error))


def _first(samples: list[Sample], predicate: Any) -> Sample | None:
    return next((s for s in samples if predicate(s)), None)


def replicas_needed(demand: float) -> int:
    return math.ceil(demand / CAPACITY_PER_REPLICA)


def spike_step(values: FloatArray) -> int:
    """The first replay step whose demand needs two replicas more than the first steps'."""
    baseline = max(replicas_needed(v) for v in values[:3])
    return next(i for i, v in enumerate(values) if replicas_needed(v) > baseline + 1)


def _unserved_share(samples: list[Sample], name: str) -> float:
    """The share of the demand in `samples` above the ready capacity of Deployment `name`."""

    def ready(sample: Sample) -> int:
        return (sample.predictive if name == PREDICTIVE else sample.reactive)[1]

    offered = sum(s.demand for s in samples)
    short = sum(max(0.0, s.demand - ready(s) * CAPACITY_PER_REPLICA) for s in samples)
    return short / offered if offered > 0 else 0.0


# ---------------------------------------------------------------------------- tests


def test_predictive_scaled_object_follows_the_plan_and_serves_the_rise_that_reactive_misses(chain: Chain) -> None:
    kube = Kube(chain.cluster)
    try:
        for name in (PREDICTIVE, REACTIVE):
            kube.apps.create_namespaced_deployment(NAMESPACE, gpu_deployment(name, replicas=1))
        for body in (
            _scaled_object(PREDICTIVE, predictive_trigger(chain.daemon_grpc_port)),
            _scaled_object(REACTIVE, _reactive_trigger(chain.prometheus.url)),
        ):
            kube.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", body)

        with Recorder(chain, kube) as recorder:
            for name in (PREDICTIVE, REACTIVE):
                _wait_for(f"ScaledObject {name} Ready", lambda n=name: kube.condition(n, "Ready") == "True", 60)
                _wait_for(
                    f"KEDA's HPA keda-hpa-{name}",
                    lambda n=name: kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(
                        f"keda-hpa-{n}", NAMESPACE
                    ),
                    30,
                )
            _wait_for("the replay to end", chain.replay.finished, chain.replay.duration_seconds + 60, 2)
            time.sleep(3 * HPA_SYNC_PERIOD_S + POD_READY_DELAY_S)
        samples = recorder.samples

        # KEDA drives our scaler: its HPA reads an external metric that the daemon serves.
        hpa = kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{PREDICTIVE}", NAMESPACE)
        assert hpa.spec.metrics[0].type == "External"
        assert _grpc_calls(chain.daemon_http_port, "GetMetrics", "OK") > 0
        assert _grpc_calls(chain.daemon_http_port, "GetMetricSpec", "OK") > 0

        # The spike: the first replay step whose demand needs more replicas than any step before it.
        values = chain.replay.live_values
        spike = spike_step(values)
        spike_at = chain.replay.step_time(spike)
        need = replicas_needed(float(values[spike]))
        _write_plot(chain, samples, spike_at)
        (ARTIFACT_DIR / "samples.json").write_text(json.dumps([s.__dict__ for s in samples]))
        summary = (
            f"spike at replay step {spike} (demand {values[spike]:.0f}, {need} replicas needed); "
            f"samples around it: {[s for s in samples if abs(s.at - spike_at) < 15]}; "
            f"recorder errors {recorder.errors[:3]}"
        )

        replay_samples = [s for s in samples if chain.replay.playing(s.at)]
        unserved = {name: _unserved_share(replay_samples, name) for name in (PREDICTIVE, REACTIVE)}
        predictive_ready = _first(samples, lambda s: s.predictive[1] >= need)
        reactive_scaled = _first(samples, lambda s: s.reactive[0] >= need)
        reactive_ready = _first(samples, lambda s: s.reactive[1] >= need)
        summary += f"; unserved share {unserved}; first ready for it {predictive_ready}, {reactive_ready}"
        assert replay_samples and predictive_ready is not None, summary
        assert reactive_scaled is not None and reactive_ready is not None, summary
        # The predictive Deployment runs at the replica counts that the daemon plans ...
        planned_enough = [s for s in samples if s.planned is not None and s.planned >= need]
        assert any(s.predictive[0] == s.planned for s in planned_enough), summary
        # ... the reactive trigger asks for the spike's replicas only once its demand is there ...
        assert reactive_scaled.at > spike_at, summary
        # ... and, counting demand, the capacity that was ready served far more of it. Not
        # "ready before the spike step": whether the p99 band 30 s ahead crosses the spike's
        # 200 before its demand arrives depends on which window the daily rebuild fitted
        # (docs/keda-chain.md, "How often the lead happens"); the demand served does not.
        assert unserved[PREDICTIVE] <= UNSERVED_RATIO_BOUND * unserved[REACTIVE], summary
    finally:
        kube.close()


def test_keda_applies_fallback_while_prometheus_is_down_and_recovers(chain: Chain) -> None:
    kube = Kube(chain.cluster)
    try:
        if not _first_ready(kube):
            pytest.fail("ScaledObject predictive does not exist: run the whole module", pytrace=False)
        kube.custom.patch_namespaced_custom_object(
            "keda.sh",
            "v1alpha1",
            NAMESPACE,
            "scaledobjects",
            PREDICTIVE,
            {"spec": {"fallback": {"failureThreshold": 2, "replicas": FALLBACK_REPLICAS}}},
        )
        unavailable_before = _grpc_calls(chain.daemon_http_port, "GetMetrics", "UNAVAILABLE")
        planned_before = (daemon_target(chain.daemon_http_port, PREDICTIVE) or {}).get("planned_replicas")
        assert planned_before is not None and planned_before != FALLBACK_REPLICAS

        chain.prometheus.stop()
        try:
            _wait_for(
                f"fallback: {PREDICTIVE} at {FALLBACK_REPLICAS} replicas",
                lambda: kube.replicas(PREDICTIVE)[0] == FALLBACK_REPLICAS,
                120,
                1,
            )
            assert _grpc_calls(chain.daemon_http_port, "GetMetrics", "UNAVAILABLE") > unavailable_before
            # KEDA sets the condition from the status it read before counting the failure: one call later.
            _wait_for(
                "the ScaledObject's Fallback condition", lambda: kube.condition(PREDICTIVE, "Fallback") == "True", 30
            )
        finally:
            chain.prometheus.start()

        def recovered() -> bool:
            target = daemon_target(chain.daemon_http_port, PREDICTIVE) or {}
            planned = target.get("planned_replicas")
            return (
                target.get("status") == "ready"
                and kube.condition(PREDICTIVE, "Fallback") == "False"
                and planned is not None
                and kube.replicas(PREDICTIVE)[0] == planned
            )

        _wait_for("recovery: the plan drives the Deployment again", recovered, 120, 1)
        health = kube.scaled_object(PREDICTIVE).get("status", {}).get("health", {})
        assert all(entry.get("status") == "Happy" for entry in health.values()), health
    finally:
        kube.close()


def _first_ready(kube: Kube) -> bool:
    try:
        return kube.condition(PREDICTIVE, "Ready") == "True"
    except Exception:  # not found
        return False


# ---------------------------------------------------------------------------- plot


def _write_plot(chain: Chain, samples: list[Sample], spike_at: float) -> None:
    import matplotlib  # noqa: PLC0415 - a test-only dependency

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    start = chain.replay.started_at
    trace = chain.replay.trace

    def trace_minutes(at: float) -> float:
        return (at - start) * trace.speedup / 60.0

    xs = [trace_minutes(s.at) for s in samples]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, height_ratios=[3, 2])
    steps = range(chain.replay.live_values.size + 1)
    demand_x = [trace_minutes(chain.replay.step_time(i)) for i in steps]
    demand_y = [*chain.replay.live_values, chain.replay.live_values[-1]]
    top.step(demand_x, demand_y, where="post", color="black", label="demand (requests / 4 min)")
    top.plot(xs, [s.predictive[1] * CAPACITY_PER_REPLICA for s in samples], color="tab:blue",
             label="ready capacity, predictive (our scaler)")  # fmt: skip
    top.plot(xs, [s.reactive[1] * CAPACITY_PER_REPLICA for s in samples], color="tab:orange",
             label="ready capacity, reactive (KEDA prometheus trigger)")  # fmt: skip
    for axis in (top, bottom):
        axis.axvline(trace_minutes(spike_at), color="grey", linestyle=":", linewidth=1)
    top.annotate("spike", (trace_minutes(spike_at), 0.02), xycoords=("data", "axes fraction"), fontsize=8)
    top.set_ylabel("requests per 4 trace minutes")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(
        f"{trace.name}, 11 July 1995 from {int(REPLAY_FROM_HOUR):02d}:{round(REPLAY_FROM_HOUR % 1 * 60):02d}, "
        f"replayed {trace.speedup:.0f}x through Prometheus -> KEDA -> HPA -> kwok pods",
        fontsize=9,
    )
    bottom.step(xs, [s.planned if s.planned is not None else float("nan") for s in samples], where="post",
                color="tab:blue", linestyle="--", label="planned replicas (daemon)")  # fmt: skip
    bottom.step(xs, [s.predictive[1] for s in samples], where="post", color="tab:blue", label="ready, predictive")
    bottom.step(xs, [s.reactive[1] for s in samples], where="post", color="tab:orange", label="ready, reactive")
    bottom.step(xs, [s.buffer if s.buffer is not None else float("nan") for s in samples], where="post",
                color="tab:green", label="placeholder buffer (planned)")  # fmt: skip
    bottom.set_ylabel("replicas")
    bottom.set_xlabel(f"trace minutes since replay start (1 trace minute = {60 / trace.speedup:.1f} s wall)")
    bottom.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    figure.savefig(ARTIFACT_DIR / "lead.png", dpi=90)
    if os.environ.get(UPDATE_DOC_IMAGE_ENV) == "1":
        DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(DOC_IMAGE, dpi=70)
    plt.close(figure)
