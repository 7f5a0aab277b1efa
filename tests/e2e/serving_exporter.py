"""Model-serving pods for the closed-loop tests: metrics that answer to the real replicas.

A replayed arrival trace offers requests to a Deployment. Its *ready* pods, as the real
control plane reports them, serve a shared FIFO backlog, each at ``capacity_per_replica``
requests per second; a queued request gives up after ``patience_seconds``. Every pod
exports what a vLLM (v1 engine) server would, under its own ``pod`` label:

- ``vllm:num_requests_waiting``: its share of the backlog;
- ``vllm:num_requests_running``: requests in flight, the pod's throughput times the
  service time (Little's law), so a saturated pod runs ``slots`` of them;
- ``vllm:request_success_total``: requests it finished (a counter);
- ``vllm:kv_cache_usage_perc``: running / slots, the share of its KV cache in use.

So the series an autoscaler reads are symptoms: completions stop at the capacity that
the replicas give, the queue grows while they are short and drains once they are
ready. Nothing here knows about the autoscaler; only the pods that the control plane
reports ready change what is served.

:class:`ServingModel` is the arithmetic (pure, unit-tested); :class:`ServingExporter`
ticks it once a second from a thread, reading each workload's ready pods from the API
server, and serves the metrics with prometheus-client on loopback. :func:`history_series`
runs the same model over the trace before the replay, for backfilling Prometheus.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from autoscaler.domain.types import FloatArray
from tests.integration.prometheus_server import EXPORTER_LABELS, BackfillSeries

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
SUCCESS = "vllm:request_success"
"""A counter family; its sample is exposed as ``vllm:request_success_total``."""
SUCCESS_TOTAL = f"{SUCCESS}_total"
KV_CACHE = "vllm:kv_cache_usage_perc"
MODEL_LABEL = "model_name"
POD_LABEL = "pod"


@dataclass(frozen=True)
class ServingParams:
    """What one ready pod does: its throughput, how long a request holds it, how long one waits."""

    capacity_per_replica: float
    """Requests per second one ready pod completes when it has work."""
    service_seconds: float
    """How long one request is in flight on a pod."""
    patience_seconds: float
    """A request still queued this long after it arrived gives up."""

    @property
    def slots(self) -> float:
        """Requests in flight on a saturated pod: its KV cache is then full."""
        return self.capacity_per_replica * self.service_seconds


@dataclass(frozen=True)
class PodMetrics:
    waiting: float
    running: float
    completed_total: float
    kv_cache_usage: float


@dataclass
class ServingTotals:
    """Requests counted since the model started: arrived = served + abandoned + backlog."""

    arrived: float = 0.0
    served: float = 0.0
    abandoned: float = 0.0


@dataclass
class ServingModel:
    """A FIFO backlog served by the ready pods, as a fluid: requests come in fractions."""

    params: ServingParams
    totals: ServingTotals = field(default_factory=ServingTotals)
    _queue: deque[list[float]] = field(default_factory=deque, init=False, repr=False)
    """Cohorts ``[arrived_at, requests]``, oldest first."""
    _completed: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    @property
    def backlog(self) -> float:
        return sum(requests for _, requests in self._queue)

    def step(self, *, now: float, dt: float, arrival_rate: float, ready_pods: Sequence[str]) -> dict[str, PodMetrics]:
        """Advance ``dt`` seconds ending at ``now``; the metrics each ready pod exports then."""
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt}")
        arrived = max(arrival_rate, 0.0) * dt
        if arrived > 0:
            self._queue.append([now, arrived])
            self.totals.arrived += arrived
        served = self._serve(len(ready_pods) * self.params.capacity_per_replica * dt)
        self._abandon(now)
        # A pod that left the Deployment takes its counter with it, as a deleted pod's series ends.
        self._completed = {pod: self._completed.get(pod, 0.0) for pod in ready_pods}
        if not ready_pods:
            return {}
        per_pod_served = served / len(ready_pods)
        running = per_pod_served / dt * self.params.service_seconds
        waiting = self.backlog / len(ready_pods)
        metrics: dict[str, PodMetrics] = {}
        for pod in ready_pods:
            self._completed[pod] += per_pod_served
            metrics[pod] = PodMetrics(
                waiting=waiting,
                running=running,
                completed_total=self._completed[pod],
                kv_cache_usage=min(running / self.params.slots, 1.0),
            )
        return metrics

    def _serve(self, capacity: float) -> float:
        """Take up to ``capacity`` requests from the front of the queue."""
        served = 0.0
        while self._queue and served < capacity:
            cohort = self._queue[0]
            taken = min(cohort[1], capacity - served)
            served += taken
            cohort[1] -= taken
            if cohort[1] <= 1e-12:
                self._queue.popleft()
        self.totals.served += served
        return served

    def _abandon(self, now: float) -> None:
        while self._queue and now - self._queue[0][0] >= self.params.patience_seconds:
            self.totals.abandoned += self._queue.popleft()[1]


@dataclass(frozen=True)
class ArrivalSchedule:
    """A trace's bins replayed as arrival rates: bin ``i`` holds from ``started_at + i * wall_step_seconds``.

    ``values`` are requests per wall second. Before the start the first bin holds and
    after the end the last one, as a quiet trace would.
    """

    values: FloatArray
    wall_step_seconds: float
    started_at: float

    def index_at(self, wall_time: float) -> int:
        step = math.floor((wall_time - self.started_at) / self.wall_step_seconds)
        return min(max(step, 0), self.values.size - 1)

    def rate_at(self, wall_time: float) -> float:
        return float(self.values[self.index_at(wall_time)])

    def step_time(self, step: int) -> float:
        return self.started_at + step * self.wall_step_seconds


@dataclass
class ServedWorkload:
    """One Deployment's serving pods: its model, its arrivals and the last metrics of its pods."""

    namespace: str
    deployment: str
    model_name: str
    model: ServingModel
    arrivals: ArrivalSchedule
    pods: dict[str, PodMetrics] = field(default_factory=dict)
    ready_pods: tuple[str, ...] = ()

    def labels(self, pod: str) -> dict[str, str]:
        return {MODEL_LABEL: self.model_name, POD_LABEL: pod}


def history_series(
    workload: ServedWorkload,
    *,
    rates: Sequence[tuple[float, float]],
    pods_at: Callable[[float, float], Sequence[str]],
    dt: float,
) -> list[BackfillSeries]:
    """Serve ``rates`` ((wall time, requests/s), oldest first, ``dt`` apart) with the pods
    ``pods_at(time, rate)`` names, and return every pod's series for backfilling.

    The workload's model keeps its state, so the live replay continues from here: a pod
    that is still ready then continues its counter.
    """
    points: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for at, rate in rates:
        for pod, metrics in workload.model.step(now=at, dt=dt, arrival_rate=rate, ready_pods=pods_at(at, rate)).items():
            for metric, value in _metric_values(metrics):
                points.setdefault((metric, pod), []).append((at, value))
    return [
        BackfillSeries(metric=metric, labels={**EXPORTER_LABELS, **workload.labels(pod)}, points=series)
        for (metric, pod), series in points.items()
    ]


def _metric_values(metrics: PodMetrics) -> Iterator[tuple[str, float]]:
    yield WAITING, metrics.waiting
    yield RUNNING, metrics.running
    yield SUCCESS_TOTAL, metrics.completed_total
    yield KV_CACHE, metrics.kv_cache_usage


def ready_pod_names(core: Any, namespace: str, deployment: str) -> tuple[str, ...]:
    """The Deployment's pods that are Ready and not being deleted, by name (selector ``app=<name>``)."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={deployment}").items
    return tuple(
        sorted(
            pod.metadata.name
            for pod in pods
            if pod.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        )
    )


class _VllmCollector(Collector):
    """Every workload's per-pod metrics, as the last tick left them."""

    def __init__(self, exporter: ServingExporter) -> None:
        self._exporter = exporter

    def collect(self) -> Iterator[Metric]:
        labels = [MODEL_LABEL, POD_LABEL]
        waiting = GaugeMetricFamily(WAITING, "Requests waiting to be scheduled.", labels=labels)
        running = GaugeMetricFamily(RUNNING, "Requests in model execution batches.", labels=labels)
        success = CounterMetricFamily(SUCCESS, "Requests finished.", labels=labels)
        kv_cache = GaugeMetricFamily(KV_CACHE, "KV-cache usage, 1 = full.", labels=labels)
        for model_name, pod, metrics in self._exporter.pod_metrics():
            values = [model_name, pod]
            waiting.add_metric(values, metrics.waiting)
            running.add_metric(values, metrics.running)
            success.add_metric(values, metrics.completed_total)
            kv_cache.add_metric(values, metrics.kv_cache_usage)
        yield from (waiting, running, success, kv_cache)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape a second would flood the test output."""


class ServingExporter:
    """Ticks every workload's model each ``tick_seconds`` and serves /metrics on 127.0.0.1.

    ``core`` is a ``kubernetes.client.CoreV1Api``. A failed pod read keeps the last pods
    for that tick and is counted in ``read_errors``: the next tick reads again.
    """

    def __init__(self, core: Any, workloads: Sequence[ServedWorkload], *, tick_seconds: float = 1.0) -> None:
        self._core = core
        self.workloads: Mapping[str, ServedWorkload] = {w.deployment: w for w in workloads}
        self._tick_seconds = tick_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._last_tick = 0.0
        self.read_errors: list[str] = []
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_VllmCollector(self))
        self._app = make_wsgi_app(self.registry)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def pod_metrics(self) -> list[tuple[str, str, PodMetrics]]:
        with self._lock:
            return [(w.model_name, pod, m) for w in self.workloads.values() for pod, m in w.pods.items()]

    def observe(self, deployment: str) -> tuple[float, ServingTotals]:
        """The backlog and the totals of one workload, consistent with each other."""
        with self._lock:
            model = self.workloads[deployment].model
            return model.backlog, ServingTotals(**vars(model.totals))

    def start(self, *, since: float) -> None:
        """Serve from now; the first tick covers the time since ``since`` (the end of the history)."""
        self._last_tick = since
        self.tick(time.time())
        self._server = make_server("127.0.0.1", 0, self.wsgi_app, ThreadingWSGIServer, handler_class=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, name="serving-exporter-http", daemon=True).start()
        self._thread = threading.Thread(target=self._run, name="serving-exporter", daemon=True)
        self._thread.start()

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Any:
        """prometheus-client's /metrics app, always in the text format.

        Asked for OpenMetrics (Prometheus asks first), prometheus-client 0.26 turns the
        colons of sample names into underscores while it keeps them in # TYPE
        (prometheus/client_python#1177), so the series would be stored as ``vllm_...``.
        """
        environ.pop("HTTP_ACCEPT", None)
        return self._app(environ, start_response)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def tick(self, now: float) -> None:
        dt = now - self._last_tick
        if dt <= 0:
            return
        ready = {name: self._read_ready(w) for name, w in self.workloads.items()}
        with self._lock:
            for name, workload in self.workloads.items():
                workload.ready_pods = ready[name]
                rate = workload.arrivals.rate_at(now - dt / 2)  # the bin the tick's middle falls in
                workload.pods = workload.model.step(now=now, dt=dt, arrival_rate=rate, ready_pods=workload.ready_pods)
        self._last_tick = now

    def _read_ready(self, workload: ServedWorkload) -> tuple[str, ...]:
        try:
            return ready_pod_names(self._core, workload.namespace, workload.deployment)
        except Exception as error:  # an API hiccup: serve this tick with the pods last seen
            self.read_errors.append(f"{workload.deployment}: {error!r}")
            return workload.ready_pods

    def _run(self) -> None:
        while not self._stop.wait(max(self._last_tick + self._tick_seconds - time.time(), 0.0)):
            self.tick(time.time())
