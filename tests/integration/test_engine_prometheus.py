"""The engine and the gRPC service on a real Prometheus fed with trace data.

- a daemon restart loses no history: the new engine warm-starts the whole window
  with range queries and sees the same values as the old one;
- stale data reaches KEDA as UNAVAILABLE (checked with KEDA's own proto), never as 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from autoscaler.adapters.clock import SystemClock
from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.services.grpc_server import GrpcServer
from tests.integration.conftest import TraceHistory
from tests.integration.keda_proto import KedaStubs, keda_stubs
from tests.integration.prometheus_server import HISTORY_METRIC, MetricsExporter, PrometheusServer

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
