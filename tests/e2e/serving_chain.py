"""The real chain around modelled serving pods, shared by the closed-loop end-to-end tests.

A real control plane (kube-apiserver, scheduler, controller-manager, etcd, kwok GPU
nodes), KEDA's operator and metrics adapter, a real Prometheus scraping a
:class:`ServingExporter` every second, and our daemon (``autoscaler serve``) reading
the scale targets' replicas from the API server (``replicaSource: kubernetes``).

Each :class:`ServedTarget` is a Deployment whose ready pods serve a replayed trace. The
trace is compressed as in test_keda_chain.py: one bin per ``WALL_STEP_S`` of wall time.
Before the replay, Prometheus is backfilled with the same serving model run over the
trace's preceding days, so the daemon warm-starts a forecast of the derived demand. In
that history the pods are as many as keep utilisation at 80 %; the Deployment's own
pods are the history's first pods, and for the last ``QUIET_TAIL_S`` only they serve,
so no history-only pod still answers an instant query (Prometheus looks back five
minutes for a series that ended without a staleness marker, as backfilled ones do).
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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
)
from tests.e2e.kube_chain import scaled_object as keda_scaled_object
from tests.e2e.replay import CompressedTrace
from tests.e2e.serving_exporter import (
    MODEL_LABEL,
    RUNNING,
    SUCCESS_TOTAL,
    WAITING,
    ArrivalSchedule,
    ServedWorkload,
    ServingExporter,
    ServingModel,
    ServingParams,
    ServingTotals,
    history_series,
    ready_pod_names,
)
from tests.e2e.waiting import wait_for
from tests.harness.cluster import ControlPlane, build_binaries, free_port
from tests.harness.keda import Keda, KedaBinaries
from tests.integration.prometheus_server import BackfillSeries, PrometheusServer

REPO_ROOT = Path(__file__).resolve().parents[2]
WALL_STEP_S = 10.0
"""One trace bin per 10 s of wall time; also the daemon's step, its shortest."""
HISTORY_DT_S = 5.0
"""Spacing of the backfilled points: four of them in a rate window."""
RATE_WINDOW = "20s"
"""The completions' rate window: the presets' 120 s would span 12 bins of the compressed trace."""
HISTORY_UTILISATION = 0.8
QUIET_TAIL_S = 330.0
"""Prometheus's five-minute lookback and a margin: only the Deployment's pods serve then."""
POD_READY_DELAY_S = 10.0
HPA_SYNC_PERIOD_S = 2
GPU_NODES = 6
MAX_REPLICAS = 20
LEAD_TIME_S = 30  # pod start + HPA sync + KEDA polling + the completions' rate window, with margin


@dataclass(frozen=True)
class ServedTarget:
    """A Deployment that serves ``trace`` from bin ``live_start`` to ``live_end`` (its pods' model name is its name)."""

    deployment: str
    trace: CompressedTrace
    live_start: int
    live_end: int
    history_bins: int
    requests_per_second_per_unit: float
    """Arrivals per wall second for one unit of the trace's value."""
    params: ServingParams
    warm_up_bins: int = 3
    """Live bins that the first pods must serve alone: the chain is not driving yet."""

    @property
    def rates(self) -> FloatArray:
        """Arrival rates (requests per wall second) of the history and live bins."""
        bins = self.trace.values[self.live_start - self.history_bins : self.live_end]
        rates: FloatArray = bins * self.requests_per_second_per_unit
        return rates

    @property
    def live_rates(self) -> FloatArray:
        live: FloatArray = self.rates[self.history_bins :]
        return live

    def replicas_for(self, rate: float, utilisation: float = 1.0) -> int:
        return max(1, math.ceil(rate / (self.params.capacity_per_replica * utilisation) - 1e-9))

    def initial_replicas(self) -> int:
        """Enough for the quiet tail of the history and the live bins before the chain drives."""
        tail_bins = math.ceil(QUIET_TAIL_S / WALL_STEP_S)
        window = self.rates[self.history_bins - tail_bins : self.history_bins + self.warm_up_bins]
        return self.replicas_for(float(window.max()), HISTORY_UTILISATION)

    def schedule(self, live_from: float) -> ArrivalSchedule:
        return ArrivalSchedule(
            values=self.rates,
            wall_step_seconds=WALL_STEP_S,
            started_at=live_from - self.history_bins * WALL_STEP_S,
        )


def completions_query(model_name: str) -> str:
    return f'sum(rate({SUCCESS_TOTAL}{{{MODEL_LABEL}="{model_name}"}}[{RATE_WINDOW}]))'


def trigger_metadata(
    grpc_port: int,
    target: ServedTarget,
    *,
    scale_down_stabilization_s: float,
    scale_down_percent_per_minute: float | None = None,
) -> dict[str, str]:
    """Our external trigger on the vLLM signals: completions, waiting, running and the pods counted.

    ``scale_down_percent_per_minute`` None leaves the key at its default.
    """
    selector = f'{MODEL_LABEL}="{target.deployment}"'
    history_hours = math.ceil(target.history_bins * WALL_STEP_S / 3600) + 1
    metadata = {
        "scalerAddress": f"127.0.0.1:{grpc_port}",
        "completionsQuery": completions_query(target.deployment),
        "waitingQuery": f"sum({WAITING}{{{selector}}})",
        "runningQuery": f"sum({RUNNING}{{{selector}}})",
        "podsQuery": f"count({RUNNING}{{{selector}}})",
        "capacityPerReplica": f"{target.params.capacity_per_replica:g}",
        "drainTime": f"{2 * WALL_STEP_S:g}s",
        "replicaSource": "kubernetes",
        "workloadName": target.deployment,
        "step": f"{WALL_STEP_S:g}s",
        "leadTime": f"{LEAD_TIME_S}s",
        "nodeLeadTime": f"{2 * LEAD_TIME_S}s",
        "maxBufferReplicas": "0",  # no placeholder pods: the operator allows none in this namespace
        "historyWindow": f"{history_hours}h",
        "minReplicas": "1",
        "maxReplicas": str(MAX_REPLICAS),
        "scaleDownStabilization": f"{scale_down_stabilization_s:g}s",
        "staleAfter": "30s",
    }
    if scale_down_percent_per_minute is not None:
        metadata["scaleDownPercentPerMinute"] = f"{scale_down_percent_per_minute:g}"
    return metadata


def scaled_object(name: str, metadata: dict[str, str], *, hpa_scale_down_window_s: int) -> dict[str, Any]:
    """KEDA's HPA follows the metric up at once (15 s policy periods would be six trace minutes);
    down, its window is ``hpa_scale_down_window_s`` and its default policies apply."""
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": MAX_REPLICAS, "periodSeconds": 1}],
        },
        "scaleDown": {"stabilizationWindowSeconds": hpa_scale_down_window_s},
    }
    trigger = {"type": "external", "metadata": metadata}
    return keda_scaled_object(name, trigger=trigger, max_replicas=MAX_REPLICAS, behavior=behavior)


@dataclass
class ServingChain:
    cluster: ControlPlane
    keda: Keda
    prometheus: PrometheusServer
    exporter: ServingExporter
    kube: Kube
    targets: dict[str, ServedTarget]
    live_from: float
    """Wall time at which every target's first live bin starts."""
    daemon_grpc_port: int
    daemon_http_port: int
    daemon_log: Path

    def create_scaled_object(
        self,
        name: str,
        *,
        scale_down_stabilization_s: float,
        hpa_scale_down_window_s: int,
        scale_down_percent_per_minute: float | None = None,
    ) -> None:
        metadata = trigger_metadata(
            self.daemon_grpc_port,
            self.targets[name],
            scale_down_stabilization_s=scale_down_stabilization_s,
            scale_down_percent_per_minute=scale_down_percent_per_minute,
        )
        body = scaled_object(name, metadata, hpa_scale_down_window_s=hpa_scale_down_window_s)
        self.kube.custom.create_namespaced_custom_object("keda.sh", "v1alpha1", NAMESPACE, "scaledobjects", body)

    def wait_until_driven(self, name: str) -> None:
        """KEDA reads our metric for ``name`` and its HPA exists."""
        wait_for(f"ScaledObject {name} Ready", lambda: self.kube.condition(name, "Ready") == "True", 90, 0.5)
        wait_for(
            f"KEDA's HPA keda-hpa-{name}",
            lambda: self.kube.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{name}", NAMESPACE),
            30,
            0.5,
        )

    def live_end(self, name: str) -> float:
        target = self.targets[name]
        return self.live_from + (target.live_end - target.live_start) * WALL_STEP_S

    def daemon_target(self, name: str) -> dict[str, Any] | None:
        """The daemon's summary of ``name`` from its JSON API, None before it has one."""
        return daemon_target(self.daemon_http_port, name)

    def daemon_log_tail(self, characters: int = 4000) -> str:
        return self.daemon_log.read_text(errors="replace")[-characters:]


def _wait_pods_ready(core: Any, name: str, replicas: int) -> tuple[str, ...]:
    return wait_for(
        f"{replicas} ready pods of {name}",
        lambda: pods if len(pods := ready_pod_names(core, NAMESPACE, name)) == replicas else None,
        60,
        0.5,
    )


def _backfill(
    target: ServedTarget, workload: ServedWorkload, first_pods: Sequence[str], live_from: float
) -> list[BackfillSeries]:
    """The history as served with utilisation at 80 %, the Deployment's pods first and alone at the end."""
    schedule = workload.arrivals
    grid = np.arange(schedule.started_at + HISTORY_DT_S, live_from + 1e-6, HISTORY_DT_S)

    def pods_at(at: float, rate: float) -> list[str]:
        count = len(first_pods)
        if at < live_from - QUIET_TAIL_S:
            count = max(count, target.replicas_for(rate, HISTORY_UTILISATION))
        return [*first_pods, *(f"{target.deployment}-history-{i}" for i in range(len(first_pods), count))]

    rates = [(float(at), schedule.rate_at(float(at) - HISTORY_DT_S / 2)) for at in grid]
    return history_series(workload, rates=rates, pods_at=pods_at, dt=HISTORY_DT_S)


def _daemon_config(workdir: Path, cluster: ControlPlane) -> Path:
    """Replicas are read with the admin kubeconfig; the actuator stays off (no placeholders)."""
    path = workdir / "daemon.yaml"
    path.write_text(yaml.safe_dump({"actuator": {"mode": "off", "kubeconfig": str(cluster.kubeconfig)}}))
    return path


@contextlib.contextmanager
def serving_chain(
    workdir: Path, keda_binaries: KedaBinaries, targets: Sequence[ServedTarget]
) -> Iterator[ServingChain]:
    """Start everything, Deployments at their initial replicas; stop it all on exit."""
    cluster = hpa_control_plane(
        build_binaries(),
        workdir / "control-plane",
        pod_ready_delay_s=POD_READY_DELAY_S,
        hpa_sync_period_s=HPA_SYNC_PERIOD_S,
    )
    keda = Keda(cluster, keda_binaries, workdir / "keda")
    prometheus = PrometheusServer(workdir / "prometheus")
    exporter: ServingExporter | None = None
    kube: Kube | None = None
    daemon: subprocess.Popen[bytes] | None = None
    try:
        cluster.start()
        cluster.wait_for_nodes_ready(cluster.create_fake_gpu_nodes(GPU_NODES))
        with cluster.api_client() as api:
            install_crds(api, keda_binaries.version)
        keda.start()
        kube = Kube(cluster)
        from kubernetes import client  # noqa: PLC0415 - as the harness does, imported on use

        core: Any = client.CoreV1Api(kube.apps.api_client)
        for target in targets:
            kube.apps.create_namespaced_deployment(
                NAMESPACE, gpu_deployment(target.deployment, replicas=target.initial_replicas())
            )
        first_pods = {t.deployment: _wait_pods_ready(core, t.deployment, t.initial_replicas()) for t in targets}

        live_from = time.time()
        workloads = [
            ServedWorkload(
                namespace=NAMESPACE,
                deployment=t.deployment,
                model_name=t.deployment,
                model=ServingModel(t.params),
                arrivals=t.schedule(live_from),
            )
            for t in targets
        ]
        history = [
            series
            for target, workload in zip(targets, workloads, strict=True)
            for series in _backfill(target, workload, first_pods[target.deployment], live_from)
        ]
        prometheus.backfill(history)
        exporter = ServingExporter(core, workloads)
        exporter.start(since=live_from)
        prometheus.scrape_target = exporter.address
        prometheus.start()

        grpc_port, http_port = free_port(), free_port()
        daemon_log = workdir / "daemon.log"
        with daemon_log.open("wb") as log:
            command = daemon_command(
                prometheus_url=prometheus.url,
                grpc_port=grpc_port,
                http_port=http_port,
                config=_daemon_config(workdir, cluster),
            )
            daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        wait_for(f"daemon /readyz (log {daemon_log})", lambda: http_ok(f"http://127.0.0.1:{http_port}/readyz"), 60, 0.5)
        yield ServingChain(
            cluster=cluster,
            keda=keda,
            prometheus=prometheus,
            exporter=exporter,
            kube=kube,
            targets={t.deployment: t for t in targets},
            live_from=live_from,
            daemon_grpc_port=grpc_port,
            daemon_http_port=http_port,
            daemon_log=daemon_log,
        )
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
        prometheus.stop()
        if exporter is not None:
            exporter.stop()
        if kube is not None:
            kube.close()
        keda.stop()
        cluster.stop()


@dataclass(frozen=True)
class Sample:
    """One target at one moment: the Deployment, the serving model and the daemon's plan."""

    at: float
    arrival_rate: float
    desired: int
    ready: int
    backlog: float
    totals: ServingTotals
    planned: int | None


class Recorder(SecondlyPoller):
    """Samples every target once a second, in a thread; a failed poll is recorded, not fatal."""

    def __init__(self, chain: ServingChain) -> None:
        super().__init__("serving-chain-recorder")
        self._chain = chain
        self.samples: dict[str, list[Sample]] = {name: [] for name in chain.targets}
        self.errors: list[str] = []

    def poll(self) -> None:
        chain = self._chain
        for name in chain.targets:
            now = time.time()
            try:
                desired, ready = chain.kube.replicas(name)
                backlog, totals = chain.exporter.observe(name)
                summary = chain.daemon_target(name) or {}
                rate = chain.exporter.workloads[name].arrivals.rate_at(now)
                self.samples[name].append(
                    Sample(now, rate, desired, ready, backlog, totals, summary.get("planned_replicas"))
                )
            except Exception as error:  # the next poll may work
                self.errors.append(f"{name}: {error!r}")
