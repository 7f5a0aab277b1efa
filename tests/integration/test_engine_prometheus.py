"""The engine and the gRPC service on a real Prometheus fed with trace data.

- a daemon restart loses no history: the new engine warm-starts the whole window
  with range queries and sees the same values as the old one;
- stale data reaches KEDA as UNAVAILABLE (checked with KEDA's own proto), never as 0;
- a series that stopped is stale by its newest sample's own time, while Prometheus still
  answers with its last value;
- every signal of a target and its replica count are collected each step, and one of
  four pods that stops reporting does not scale the target down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from autoscaler.adapters.clock import SystemClock
from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from autoscaler.domain.signals import ReplicaCounts
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.services.grpc_server import GrpcServer
from tests.integration.conftest import ServerFactory, TraceHistory
from tests.integration.keda_proto import KedaStubs, keda_stubs
from tests.integration.prometheus_server import (
    EXPORTER_LABELS,
    HISTORY_METRIC,
    BackfillSeries,
    MetricsExporter,
    PrometheusServer,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

LIVE = {
    "query": f"sum({HISTORY_METRIC})",
    "capacityPerReplica": "10",
    "step": "60s",
    "leadTime": "120s",
    "historyWindow": "6h",
}
# last_over_time over a short window: empty as soon as the series stops being fresh,
# while range queries over the window still return the history.
STALE = {**LIVE, "query": f"sum(last_over_time({HISTORY_METRIC}_gone[30s]))", "staleAfter": "60s", "step": "10s"}


@pytest.fixture(scope="module")
def keda(tmp_path_factory: pytest.TempPathFactory) -> KedaStubs:
    return keda_stubs(tmp_path_factory.mktemp("keda-proto"))


async def running_engine(endpoint: PrometheusEndpoint) -> Engine:
    engine = Engine(
        sources={"default": PrometheusClient(endpoint)},
        clock=SystemClock(),
        fit_executor=None,
        settings=EngineSettings(tick_seconds=0.05),
    )
    await engine.start()
    return engine


@pytest.fixture
def endpoint(prometheus: PrometheusServer) -> PrometheusEndpoint:
    return PrometheusEndpoint(name="default", url=prometheus.url, retries=1, backoff_seconds=0.05)


async def test_restart_warm_starts_the_same_history(
    endpoint: PrometheusEndpoint, prometheus_history: TraceHistory
) -> None:
    key = target_key("llm", "chat", LIVE)
    histories = []
    for _ in range(2):  # the second engine is the daemon after a restart
        engine = await running_engine(endpoint)
        try:
            engine.ensure_target(key, parse_spec(LIVE))
            snapshot = await engine.wait_for_target(key, timeout=60)
            assert snapshot is not None and snapshot.decision is not None, snapshot
            assert snapshot.status is TargetStatus.READY
            histories.append(dict(zip(snapshot.history_timestamps, snapshot.history_values, strict=True)))
        finally:
            await engine.stop()
    expected = {timestamp: value for timestamp, value in prometheus_history.points}
    for history in histories:
        common = sorted(set(history) & set(expected))
        assert len(common) >= len(expected) - 2, "warm start missed backfilled history"
        np.testing.assert_allclose([history[t] for t in common], [expected[t] for t in common])
    assert set(histories[0]) & set(histories[1]) >= set(expected) & set(histories[0])


async def first_answer(stub: Any, request: Any) -> Any:
    """A new series has no history yet: UNAVAILABLE until its first collection, then an answer."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            return await stub.GetMetrics(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAVAILABLE and "warming up" in (error.details() or "")
            assert asyncio.get_running_loop().time() < deadline, "no first answer within a minute"
            await asyncio.sleep(1)


@pytest.fixture
async def stale_engine(endpoint: PrometheusEndpoint) -> AsyncIterator[Engine]:
    engine = await running_engine(endpoint)
    yield engine
    await engine.stop()


async def test_stale_data_is_unavailable_to_keda(
    stale_engine: Engine, keda: KedaStubs, metrics_exporter: MetricsExporter
) -> None:
    exporter = metrics_exporter
    exporter.set_gauge(f"{HISTORY_METRIC}_gone", 7.0)
    key = target_key("llm", "gone", STALE)
    server = GrpcServer(stale_engine)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = keda.services.ExternalScalerStub(channel)
            ref = keda.messages.ScaledObjectRef(name="gone", namespace="llm", scalerMetadata=STALE)
            await asyncio.sleep(3)  # a few scrapes so the series exists
            spec = await stub.GetMetricSpec(ref, timeout=10)
            assert spec.metricSpecs[0].metricName == metric_name_for(key, parse_spec(STALE))
            request = keda.messages.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricSpecs[0].metricName)
            answer = await first_answer(stub, request)
            assert answer.metricValues[0].metricValue >= 1
            assert answer.metricValues[0].metricValueFloat >= 1.0
            exporter.remove(f"{HISTORY_METRIC}_gone")
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                try:
                    answer = await stub.GetMetrics(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.UNAVAILABLE
                    assert "llm/gone" in (error.details() or "")
                    break
                assert answer.metricValues[0].metricValue >= 1, "missing data must never read as 0"
                assert asyncio.get_running_loop().time() < deadline, "never turned UNAVAILABLE"
                await asyncio.sleep(1)
    finally:
        await server.stop(1)


async def test_a_stopped_series_is_stale_by_its_newest_samples_own_time(prometheus_factory: ServerFactory) -> None:
    """Within its 5 min lookback Prometheus answers with the last value at any query time;
    the target is stale by the age of that sample, not fresh by the time of the query."""
    now = time.time()
    points = [(now - 1800 + 30 * index, 5.0) for index in range(57)]  # the last one 90 s ago
    server = prometheus_factory(
        backfill=[BackfillSeries("stopped_requests", dict(EXPORTER_LABELS), points)], scrape=False
    )
    metadata = {**LIVE, "query": "sum(stopped_requests)", "step": "10s", "staleAfter": "60s"}
    client = PrometheusClient(PrometheusEndpoint(name="default", url=server.url, retries=1))
    try:
        answered = await client.instant(metadata["query"], at=time.time())
        assert answered is not None and answered.value == 5.0  # still answered, with the query's time
        newest = await client.newest_sample_at((metadata["query"],), at=time.time())
        assert newest == pytest.approx(points[-1][0], abs=0.001)
    finally:
        await client.close()
    engine = await running_engine(PrometheusEndpoint(name="default", url=server.url, retries=1))
    try:
        key = target_key("llm", "stopped", metadata)
        engine.ensure_target(key, parse_spec(metadata))
        snapshot = await engine.wait_for_target(key, timeout=30)
        assert snapshot is not None and snapshot.status is TargetStatus.STALE, snapshot
        assert snapshot.last_sample_at == pytest.approx(points[-1][0], abs=0.001)
    finally:
        await engine.stop()


PARTIAL = {
    "arrivalsQuery": 'sum(partial_arrivals{model="partial"})',
    "podsQuery": 'count(partial_arrivals{model="partial"})',
    "replicaSource": "prometheus",
    "replicasQuery": 'max(partial_ready_replicas{deployment="partial"})',  # as kube-state-metrics reports it
    "capacityPerReplica": "5",
    "step": "10s",
    "leadTime": "20s",
    "historyWindow": "1h",
    "model": "naive",
    "scaleDownStabilization": "0s",  # no damping: without the pod count, the plan would drop at once
    "scaleDownPercentPerMinute": "100",
}
PODS = [{"model": "partial", "pod": f"server-{index}"} for index in range(4)]


async def test_one_of_four_pods_stops_reporting_and_the_target_does_not_scale_down(
    endpoint: PrometheusEndpoint, metrics_exporter: MetricsExporter
) -> None:
    """Each pod reports 5 requests/s; four are ready. One pod's scrape goes missing: the sum
    reads 15, which alone would plan 3 replicas, but the pod count says 3 of 4 ready pods
    reported, so the target holds what runs, and the reason says why."""
    for labels in PODS:
        metrics_exporter.set_gauge("partial_arrivals", 5.0, labels)
    metrics_exporter.set_gauge("partial_ready_replicas", 4.0, {"deployment": "partial"})
    engine = await running_engine(endpoint)
    key = target_key("llm", "partial", PARTIAL)
    try:
        await asyncio.sleep(3)  # a few scrapes
        engine.ensure_target(key, parse_spec(PARTIAL))
        snapshot = await engine.wait_for_target(key, timeout=60)
        assert snapshot is not None and snapshot.decision is not None, snapshot
        assert engine._targets[key].pipeline.observed_replicas == ReplicaCounts(ready=4)
        metrics_exporter.remove("partial_arrivals", PODS[-1])
        decided_at = snapshot.updated_at
        reasons: list[str] = []
        deadline = asyncio.get_running_loop().time() + 45
        while len(reasons) < 2:  # two steps planned after the pod went silent
            assert asyncio.get_running_loop().time() < deadline, reasons
            snapshot = await engine.wait_for_target(key, timeout=15)
            assert snapshot is not None and snapshot.decision is not None
            if snapshot.updated_at > decided_at and snapshot.decision.reason not in reasons:
                decided_at = snapshot.updated_at
                assert snapshot.decision.replicas >= 4, snapshot.decision
                if "did not report" in snapshot.decision.reason:
                    reasons.append(snapshot.decision.reason)
            await asyncio.sleep(0.5)
        assert all("1 of 4 ready pods did not report" in reason for reason in reasons)
    finally:
        await engine.stop()
        for labels in PODS:
            metrics_exporter.remove("partial_arrivals", labels)
        metrics_exporter.remove("partial_ready_replicas", {"deployment": "partial"})
