"""The engine and the gRPC service under Prometheus faults, through our fault proxy.

One real Engine holds one target per fault; each target reads the real Prometheus
through its own `FaultProxy` (its own endpoint name), and a KEDA-style client polls
GetMetrics through the real `GrpcServer` twice a second. All scenarios run at once on
the wall clock (the faults must outlast staleAfter, so they take real time), and each
test below checks one scenario's recorded timeline:

- before the fault the plan is served; during it the last plan stays served, unchanged
  (no thrash) and never 0, until the newest sample is older than staleAfter;
- from then until the fault ends every answer is UNAVAILABLE naming the target, so
  KEDA's fallback applies;
- after the fault answers resume by themselves, and the outage is backfilled: the
  history has a real value at every step of it. A fault that made queries fail is
  fetched again at the first successful step; NaN and Inf answers are missing data, not
  failures (never 0), and the run of them is fetched once more when it ends, which here
  finds the real values that Prometheus held all along.

A counter reset is checked on its own exporter and Prometheus: the rate() preset stays
non-negative and the plan does not spike.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.adapters.clock import SystemClock
from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from autoscaler.domain.snapshot import TargetSnapshot
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineHooks, EngineSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from tests.integration.fault_proxy import Fault, FaultProxy, FaultSetting
from tests.integration.prometheus_server import EXPORTER_LABELS, BackfillSeries, MetricsExporter, PrometheusServer

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240)]

STEP_SECONDS = 10.0
STALE_AFTER_SECONDS = 20.0
FAULT_SECONDS = 34.0  # outlasts staleAfter plus a step, so every fault reaches UNAVAILABLE
POLL_SECONDS = 0.5
CLIENT_TIMEOUT_SECONDS = 1.0
DEMAND = 42.0
DEMAND_METRIC = "fault_demand"
# Polling, publishing and a loaded CI host: how late a transition may be seen.
SLACK_SECONDS = 3.0

SCENARIOS: dict[str, FaultSetting] = {
    "control": FaultSetting(),  # no fault: the plan every faulted target should be back to
    "down": FaultSetting(Fault.DOWN),
    "reset": FaultSetting(Fault.RESET),
    "slow": FaultSetting(Fault.SLOW, delay_seconds=3 * CLIENT_TIMEOUT_SECONDS),
    "http500": FaultSetting(Fault.HTTP_ERROR, status=500),
    "http503": FaultSetting(Fault.HTTP_ERROR, status=503),
    "http429": FaultSetting(Fault.HTTP_ERROR, status=429, retry_after_seconds=0.2),
    "multi": FaultSetting(Fault.MULTI_SERIES),
    "nan": FaultSetting(Fault.NAN),
    "inf": FaultSetting(Fault.INF),
}
MISSING_DATA_FAULTS = {"nan", "inf"}
FAULTS = sorted(set(SCENARIOS) - {"control"})


def metadata_for(scenario: str) -> dict[str, str]:
    return {
        "query": f'max({DEMAND_METRIC}{{scenario="{scenario}"}})',
        "prometheus": scenario,
        "capacityPerReplica": "10",
        "step": f"{STEP_SECONDS:g}s",
        "leadTime": "20s",
        "historyWindow": "1h",
        "staleAfter": f"{STALE_AFTER_SECONDS:g}s",
        "model": "naive",
        "minReplicas": "1",
    }


@dataclass
class Answer:
    at: float
    code: grpc.StatusCode
    value: int | None
    details: str


@dataclass
class Timeline:
    scenario: str
    fault_start: float = 0.0
    fault_end: float = 0.0
    baseline: int = 0
    last_sample_before_fault: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    recovered_at: float | None = None
    final: TargetSnapshot | None = None
    source_errors: int = 0

    def during_fault(self) -> list[Answer]:
        return [answer for answer in self.answers if self.fault_start <= answer.at < self.fault_end]

    def after_fault(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.at >= self.fault_end]


async def poll(stub: pb2_grpc.ExternalScalerStub, request: pb2.GetMetricsRequest) -> Answer:
    try:
        response = await stub.GetMetrics(request, timeout=10)
    except grpc.aio.AioRpcError as error:
        return Answer(time.time(), error.code(), None, error.details() or "")
    return Answer(time.time(), grpc.StatusCode.OK, response.metricValues[0].metricValue, "")


async def run_scenario(scenario: str, engine: Engine, proxy: FaultProxy, stub: pb2_grpc.ExternalScalerStub) -> Timeline:
    timeline = Timeline(scenario)
    metadata = metadata_for(scenario)
    key = target_key("faults", scenario, metadata)
    ref = pb2.ScaledObjectRef(name=scenario, namespace="faults", scalerMetadata=metadata)
    await stub.GetMetricSpec(ref, timeout=10)
    request = pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name_for(key, parse_spec(metadata)))

    async def poll_until(deadline: float, *, stop_when_ok: bool = False) -> None:
        while time.time() < deadline:
            answer = await poll(stub, request)
            timeline.answers.append(answer)
            if stop_when_ok and answer.code is grpc.StatusCode.OK:
                return
            await asyncio.sleep(POLL_SECONDS)

    # Warm start, then one live collection, so the plan served is a settled one.
    started = time.time()
    while (
        (snapshot := engine.snapshot().get(key)) is None
        or snapshot.last_sample_at is None
        or (snapshot.last_sample_at < started)
    ):
        assert time.time() < started + 3 * STEP_SECONDS, f"{scenario}: no live sample"
        await asyncio.sleep(POLL_SECONDS)
    baseline = await poll(stub, request)
    assert baseline.code is grpc.StatusCode.OK and baseline.value is not None, baseline
    timeline.baseline = baseline.value
    timeline.last_sample_before_fault = snapshot.last_sample_at

    timeline.fault_start = time.time()
    await proxy.set(SCENARIOS[scenario])
    await poll_until(timeline.fault_start + FAULT_SECONDS)
    timeline.fault_end = time.time()
    await proxy.clear()
    await poll_until(timeline.fault_end + 3 * STEP_SECONDS, stop_when_ok=True)
    if timeline.answers[-1].code is grpc.StatusCode.OK:
        timeline.recovered_at = timeline.answers[-1].at
    # The backfill runs on the first successful collection; give it a step to publish.
    await poll_until(time.time() + STEP_SECONDS + SLACK_SECONDS)
    timeline.final = engine.snapshot().get(key)
    return timeline


@pytest.fixture(scope="module")
def demand_series(metrics_exporter: MetricsExporter) -> Iterator[None]:
    for scenario in SCENARIOS:
        metrics_exporter.set_gauge(DEMAND_METRIC, DEMAND, {"scenario": scenario})
    yield
    for scenario in SCENARIOS:
        metrics_exporter.remove(DEMAND_METRIC, {"scenario": scenario})


@pytest.fixture(scope="module")
def fault_prometheus(
    tmp_path_factory: pytest.TempPathFactory, metrics_exporter: MetricsExporter, demand_series: None
) -> Iterator[PrometheusServer]:
    """A private Prometheus with 40 minutes of each scenario's demand behind the live one.

    With that history every target is past its cold start before the faults begin, so the
    plans compared after recovery come from fitted models on both sides.
    """
    end = math.floor(time.time() / STEP_SECONDS) * STEP_SECONDS - 3 * STEP_SECONDS
    points = [(end - index * STEP_SECONDS, DEMAND) for index in range(240, -1, -1)]
    server = PrometheusServer(tmp_path_factory.mktemp("fault-prometheus"), scrape_target=metrics_exporter.address)
    server.backfill(
        [BackfillSeries(DEMAND_METRIC, {**EXPORTER_LABELS, "scenario": scenario}, points) for scenario in SCENARIOS]
    )
    with server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def timelines(fault_prometheus: PrometheusServer) -> AsyncIterator[dict[str, Timeline]]:
    proxies = {scenario: FaultProxy(fault_prometheus.url) for scenario in SCENARIOS}
    for proxy in proxies.values():
        await proxy.start()
    errors: dict[str, int] = dict.fromkeys(SCENARIOS, 0)

    def count_error(endpoint: str, _kind: str) -> None:
        errors[endpoint] += 1

    sources = {
        scenario: PrometheusClient(
            PrometheusEndpoint(
                name=scenario,
                url=proxy.url,
                timeout_seconds=CLIENT_TIMEOUT_SECONDS,
                retries=1,
                backoff_seconds=0.05,
                max_backoff_seconds=1.0,
            )
        )
        for scenario, proxy in proxies.items()
    }
    clock = SystemClock()
    engine = Engine(
        sources=sources,
        clock=clock,
        fit_executor=None,
        settings=EngineSettings(tick_seconds=0.1),
        hooks=EngineHooks(on_source_error=count_error),
    )
    await engine.start()
    server = GrpcServer(engine, GrpcServerSettings(host="127.0.0.1", port=0), clock=clock.now)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            results = await asyncio.gather(
                *(run_scenario(scenario, engine, proxies[scenario], stub) for scenario in SCENARIOS)
            )
        for timeline in results:
            timeline.source_errors = errors[timeline.scenario]
        yield {timeline.scenario: timeline for timeline in results}
    finally:
        await server.stop(0)
        await engine.stop()
        for proxy in proxies.values():
            await proxy.stop()


@pytest.fixture(params=FAULTS)
def timeline(request: pytest.FixtureRequest, timelines: dict[str, Timeline]) -> Timeline:
    return timelines[request.param]


@pytest.fixture
def control(timelines: dict[str, Timeline]) -> Timeline:
    return timelines["control"]


def test_the_control_target_is_served_throughout(control: Timeline) -> None:
    assert all(answer.code is grpc.StatusCode.OK for answer in control.answers), "the fault leaked to a healthy target"


def test_never_zero_and_the_last_plan_is_kept_unchanged(timeline: Timeline) -> None:
    served = [answer.value for answer in timeline.answers if answer.code is grpc.StatusCode.OK]
    assert served and all(value is not None and value >= 1 for value in served), served
    during = {answer.value for answer in timeline.during_fault() if answer.code is grpc.StatusCode.OK}
    assert during <= {timeline.baseline}, f"plan changed during the fault: {during} vs {timeline.baseline}"


def test_unavailable_after_stale_after_and_until_the_fault_ends(timeline: Timeline) -> None:
    during = timeline.during_fault()
    first_unavailable = next(
        (index for index, answer in enumerate(during) if answer.code is grpc.StatusCode.UNAVAILABLE), None
    )
    assert first_unavailable is not None, [(round(a.at - timeline.fault_start, 1), a.code.name) for a in during]
    turned_at = during[first_unavailable].at
    assert turned_at <= timeline.last_sample_before_fault + STALE_AFTER_SECONDS + SLACK_SECONDS
    unavailable = during[first_unavailable:]
    assert all(answer.code is grpc.StatusCode.UNAVAILABLE for answer in unavailable), "flapped back to OK"
    assert all(f"faults/{timeline.scenario}" in answer.details for answer in unavailable)
    kept = [answer for answer in during if answer.at < timeline.last_sample_before_fault + STALE_AFTER_SECONDS - 1]
    assert all(answer.code is grpc.StatusCode.OK for answer in kept), "dropped the plan before staleAfter"


def test_recovers_by_itself_to_the_plan_of_a_target_without_fault(timeline: Timeline, control: Timeline) -> None:
    """The plan may move on as the model turns predictive; the control target shows where to."""
    assert timeline.recovered_at is not None, [a.code.name for a in timeline.after_fault()]
    assert timeline.recovered_at - timeline.fault_end <= 2 * STEP_SECONDS + SLACK_SECONDS
    assert timeline.final is not None and control.final is not None
    assert timeline.final.decision is not None and control.final.decision is not None
    assert timeline.final.decision.replicas == control.final.decision.replicas, (
        timeline.final.decision,
        control.final.decision,
    )


def test_history_after_the_outage(timeline: Timeline) -> None:
    final = timeline.final
    assert final is not None
    inside = (final.history_timestamps >= timeline.fault_start) & (
        final.history_timestamps <= timeline.fault_end - STEP_SECONDS
    )
    assert inside.sum() >= math.floor(FAULT_SECONDS / STEP_SECONDS) - 1
    values = final.history_values[inside]
    assert not np.any(values == 0), "a missing value was stored as 0"
    np.testing.assert_allclose(values, DEMAND, err_msg="the outage left a hole: no backfill")
    after = final.history_timestamps > timeline.fault_end + STEP_SECONDS
    np.testing.assert_allclose(final.history_values[after], DEMAND)


def test_failures_are_counted_for_telemetry(timeline: Timeline) -> None:
    if timeline.scenario in MISSING_DATA_FAULTS:
        assert timeline.source_errors == 0  # no data is not an error of the endpoint
    else:
        assert timeline.source_errors >= 1


# ---- counter reset ----------------------------------------------------------------------

RESET_RATE = 5.0
RESET_LABELS = {"model_name": "reset"}
RESET_METADATA = {
    "preset": "vllm-request-rate",
    "presetSelector": 'model_name="reset"',
    "capacityPerReplica": "1",
    "step": "10s",
    "leadTime": "20s",
    "historyWindow": "1h",
    "model": "naive",
}


async def drive_counter(exporter: MetricsExporter, *, reset_at: float, until: float) -> None:
    """A request counter at RESET_RATE per second that restarts from 0 at `reset_at`, as a pod restart does."""
    origin = time.time()
    while (now := time.time()) < until:
        since = now - (reset_at if now >= reset_at else origin)
        exporter.set_gauge("vllm:request_success_total", RESET_RATE * since, RESET_LABELS)
        await asyncio.sleep(0.2)


async def test_counter_reset_keeps_rate_non_negative_and_the_plan_steady(tmp_path: Path) -> None:
    exporter = MetricsExporter()
    with exporter:
        exporter.set_gauge("vllm:request_success_total", 0.0, RESET_LABELS)
        # The rest of the preset's bundle: one pod, nothing queued; a step that lacks any
        # of them is missing data and would hold the plan.
        exporter.set_gauge("vllm:num_requests_waiting", 0.0, RESET_LABELS)
        exporter.set_gauge("vllm:num_requests_running", 1.0, RESET_LABELS)
        server = PrometheusServer(tmp_path / "prometheus", scrape_target=exporter.address)
        with server:
            spec = parse_spec(RESET_METADATA)
            key = target_key("faults", "reset", RESET_METADATA)
            clock = SystemClock()
            engine = Engine(
                sources={"default": PrometheusClient(PrometheusEndpoint(name="default", url=server.url, retries=1))},
                clock=clock,
                fit_executor=None,
                settings=EngineSettings(tick_seconds=0.1),
            )
            start = time.time()
            driver = asyncio.create_task(drive_counter(exporter, reset_at=start + 18, until=start + 36))
            await asyncio.sleep(6)  # a few scrapes, so rate() has two points
            await engine.start()
            engine.ensure_target(key, spec)
            rates: list[float] = []
            plans: list[int] = []
            async with PrometheusClient(PrometheusEndpoint(name="direct", url=server.url)) as direct:
                while not driver.done():
                    sample = await direct.instant(spec.query, at=time.time())
                    if sample is not None:
                        rates.append(sample.value)
                    snapshot = engine.snapshot().get(key)
                    if snapshot is not None and snapshot.decision is not None:
                        plans.append(snapshot.decision.replicas)
                    await asyncio.sleep(0.5)
            await driver
            await engine.stop()
    assert len(rates) > 30 and plans, (rates, plans)
    assert min(rates) >= 0, "rate() went negative across the reset"
    assert max(rates) <= 2 * RESET_RATE, f"rate spiked across the reset: {max(rates)}"
    expected = math.ceil(RESET_RATE / float(RESET_METADATA["capacityPerReplica"]))
    assert max(plans) <= 2 * expected, f"the plan spiked: {sorted(set(plans))}"
