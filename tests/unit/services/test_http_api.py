"""The inspection API against a real aiohttp server on loopback, fed by a fake engine.

Targets are built from the recorded Azure LLM trace, with a forecast made from the
trace's own empirical h-step changes, so the numbers have the shape the engine
publishes. `trace_target` and `serve` are shared by the telemetry, schemathesis and
browser tests.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from openapi_schema_validator import OAS30Validator

from autoscaler.commands import inspect as inspect_command
from autoscaler.domain.signals import ReplicaCounts, SignalKind, StepSignals
from autoscaler.domain.snapshot import SignalHistory, TargetSnapshot, TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.domain.types import Decision, FloatArray, Forecast, ModelScore, as_float_array
from autoscaler.engine.runtime import TargetRuntime, build_target_snapshot
from autoscaler.planner.pipeline import TargetPipeline
from autoscaler.services.http_api import create_http_app, detail_json
from autoscaler.services.openapi import DEFAULT_HISTORY_POINTS, MAX_HISTORY_POINTS, openapi_document
from autoscaler.services.telemetry import Telemetry
from autoscaler.sim.backtest import BacktestConfig
from autoscaler.sim.closed_loop import ClosedLoopConfig, OursClosedLoop, run_closed_loop
from autoscaler.sim.trace import Trace
from tests.traces import trace_path
from tests.unit.services.fake_engine import FakeEngine

LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
SECRET_TOKEN = "s3cr3t-endpoint-token"
# The planning keys both targets share; SERVED_CLUSTER below models the same cluster.
PLANNING_METADATA: Mapping[str, str] = {
    "capacityPerReplica": "8",
    "step": "10s",
    "leadTime": "60s",
    "nodeLeadTime": "120s",
    "historyWindow": "1h",
    "maxBufferReplicas": "3",
}
TRACE_METADATA: Mapping[str, str] = {
    "query": 'sum(rate(vllm:request_success_total{note="Bearer xyz"}[1m]))',
    **PLANNING_METADATA,
}
SERVED_METADATA: Mapping[str, str] = {
    "completionsQuery": "sum(rate(vllm:request_success_total[1m]))",
    "waitingQuery": "sum(vllm:num_requests_waiting)",
    "replicaSource": "kubernetes",
    "workloadName": "chat",
    **PLANNING_METADATA,
    "model": "seasonal_naive",
}
SERVED_CLUSTER = ClosedLoopConfig(
    backtest=BacktestConfig(
        step_seconds=10.0,
        capacity_per_replica=8.0,
        pod_startup_seconds=60.0,
        node_startup_seconds=120.0,
        pods_per_node=4,
    )
)


def load_trace(name: str) -> FloatArray:
    with trace_path(name).open() as handle:
        return as_float_array([float(row["value"]) for row in csv.DictReader(handle)])


def empirical_forecast(values: FloatArray, horizon: int, step: float) -> Forecast:
    """Last value plus the empirical quantiles of the trace's h-step changes."""
    rows = [values[-1] + np.quantile(values[h:] - values[:-h], LEVELS) for h in range(1, horizon + 1)]
    return Forecast(step_seconds=step, levels=LEVELS, values=np.maximum(np.vstack(rows), 0.0), model="seasonal_naive")


def trace_target(
    *,
    namespace: str = "llm",
    name: str = "chat",
    metadata: Mapping[str, str] = TRACE_METADATA,
    trace: str = "azure_llm2023_conv_rate.csv",
    now: float | None = None,
    status: TargetStatus = TargetStatus.READY,
) -> TargetSnapshot:
    """A READY target whose history is a real trace ending 4 s before `now`."""
    now = time.time() if now is None else now
    spec = parse_spec(metadata)
    key = target_key(namespace, name, metadata)
    values = load_trace(trace)
    step = spec.step_seconds
    last_sample_at = now - 4.0
    timestamps = last_sample_at - step * np.arange(values.size - 1, -1, -1, dtype=np.float64)
    forecast = empirical_forecast(values, spec.node_lead_steps + 2, step)
    at_lead = float(forecast.quantile(0.95)[spec.lead_steps - 1])
    at_node = float(forecast.quantile(0.95)[spec.node_lead_steps - 1])
    planned = math.ceil(at_lead / spec.capacity_per_replica)
    reactive = math.ceil(values[-1] / spec.capacity_per_replica)
    buffer = min(spec.max_buffer_replicas, max(0, math.ceil(at_node / spec.capacity_per_replica) - planned))
    return TargetSnapshot(
        key=key,
        spec=spec,
        metric_name=metric_name_for(key, spec),
        status=status,
        updated_at=now - 1.0,
        last_sample_at=last_sample_at,
        decided_at=now - 1.0,
        decision=Decision(
            replicas=planned,
            reactive_replicas=reactive,
            buffer_replicas=buffer,
            reason=f"p95 forecast {at_lead:.1f} at +60s over 8 per replica -> {planned}",
            forecast_at_lead=at_lead,
            forecast_at_node_lead=at_node,
            quantile_level=0.95,
            predictive=True,
        ),
        forecast=forecast,
        forecast_start=last_sample_at + step,
        history_timestamps=timestamps,
        history_values=values,
        chosen_model="seasonal_naive",
        model_scores=(
            ModelScore("naive", mase=1.12, pinball=3.4, coverage=0.91),
            ModelScore("seasonal_naive", mase=0.87, pinball=2.9, coverage=0.95),
            ModelScore("gbm", mase=math.nan, pinball=math.nan, coverage=math.nan, failed="too short"),
        ),
        seasonal_periods=(6,),
        target_coverage=spec.target_coverage,
        achieved_coverage=0.94,
        forecast_error_mase=0.91,
        last_error="prometheus 'default': timeout after 5s",
        last_fit_seconds=0.042,
        last_update_seconds=0.0031,
        prometheus_errors=2,
        # The trace is the arrivals the query measures, so demand is the raw series itself.
        signal_histories=(SignalHistory(kind=SignalKind.ARRIVALS, timestamps=timestamps, values=values),),
    )


def published(
    pipeline: TargetPipeline,
    *,
    namespace: str,
    name: str,
    metadata: Mapping[str, str],
    now: float,
    shown: int = DEFAULT_HISTORY_POINTS,
) -> TargetSnapshot:
    """The view the engine publishes of `pipeline`, built by the engine's own function."""
    key = target_key(namespace, name, metadata)
    runtime = TargetRuntime(
        key=key,
        spec=pipeline.spec,
        metric_name=metric_name_for(key, pipeline.spec),
        pipeline=pipeline,
        decision=pipeline.decision,
        last_sample_at=pipeline.history()[0][-1],
    )
    return build_target_snapshot(runtime, now=now, reuse=None, shown=shown)


def served_target(*, namespace: str = "llm", name: str = "served", now: float | None = None) -> TargetSnapshot:
    """The daemon's pipeline after replicas served the Azure trace in the closed-loop simulator.

    It saw only what a scrape shows (completions, the queue) and the ready and desired
    replicas the cluster model reported, so its raw signals differ from the demand it derived.
    """
    now = time.time() if now is None else now
    values = load_trace("azure_llm2023_conv_rate.csv")
    end = math.floor((now - 4.0) / 10.0) * 10.0
    trace = Trace(
        timestamps=end - 10.0 * np.arange(values.size - 1, -1, -1, dtype=np.float64), values=values, step_seconds=10.0
    )
    policy = OursClosedLoop(parse_spec(SERVED_METADATA))
    run_closed_loop(policy, trace, SERVED_CLUSTER, bundle="completions+waiting")
    return published(policy.pipeline, namespace=namespace, name=name, metadata=SERVED_METADATA, now=now)


class SecretHoldingEngine(FakeEngine):
    """An engine that, like the real one, also holds endpoint configuration."""

    endpoint_config: Mapping[str, Any] = {
        "default": {"url": "https://prom.example:9090", "headers": {"Authorization": f"Bearer {SECRET_TOKEN}"}}
    }


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run the app on 127.0.0.1, port chosen by the kernel; yield its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def engine_with_targets(*snapshots: TargetSnapshot) -> SecretHoldingEngine:
    engine = SecretHoldingEngine()
    engine.publish(*snapshots)
    return engine


@pytest.fixture
def chat() -> TargetSnapshot:
    return trace_target()


@pytest.fixture
def engine(chat: TargetSnapshot) -> SecretHoldingEngine:
    second = trace_target(metadata={**TRACE_METADATA, "capacityPerReplica": "20"})
    other = trace_target(
        namespace="img",
        name="diffusion",
        trace="alibaba_lora_rate.csv",
        metadata={**TRACE_METADATA, "step": "5m", "leadTime": "5m", "historyWindow": "2d"},
    )
    return engine_with_targets(chat, second, other)


@pytest.fixture
async def api(engine: SecretHoldingEngine) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    app = create_http_app(engine, telemetry=Telemetry(engine))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        yield base, session


def detail_path(target: TargetSnapshot) -> str:
    key = target.key
    return f"/api/v1/targets/{key.namespace}/{key.name}/{key.metadata_digest}"


async def get_json(session: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with session.get(path) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_list_has_every_target_sorted(
    api: tuple[str, aiohttp.ClientSession], engine: SecretHoldingEngine
) -> None:
    body = await get_json(api[1], "/api/v1/targets")
    snapshot = engine.snapshot()
    assert body["generation"] == snapshot.generation
    assert body["generated_at"] == snapshot.generated_at
    keys = [(t["namespace"], t["name"], t["digest"]) for t in body["targets"]]
    assert keys == sorted((k.namespace, k.name, k.metadata_digest) for k in snapshot.targets)
    first = body["targets"][0]
    assert first["namespace"] == "img" and first["status"] == "ready"
    assert set(first) == {
        "key",
        "namespace",
        "name",
        "digest",
        "metric_name",
        "status",
        "mode",
        "planned_replicas",
        "decided_at",
        "reactive_replicas",
        "buffer_replicas",
        "ready_replicas",
        "desired_replicas",
        "model",
        "last_sample_at",
        "data_age_seconds",
        "api_url",
        "page_url",
    }


async def test_scaled_object_lists_all_its_triggers(api: tuple[str, aiohttp.ClientSession]) -> None:
    body = await get_json(api[1], "/api/v1/targets/llm/chat")
    assert (body["namespace"], body["name"]) == ("llm", "chat")
    assert len(body["targets"]) == 2
    assert {t["key"].split("#")[0] for t in body["targets"]} == {"llm/chat"}


async def test_target_detail_has_every_field(
    api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot, engine: SecretHoldingEngine
) -> None:
    body = await get_json(api[1], detail_path(chat))
    snapshot = engine.snapshot()
    spec, decision, forecast = chat.spec, chat.decision, chat.forecast
    assert decision is not None and forecast is not None and chat.forecast_start is not None

    assert body["key"] == str(chat.key)
    assert body["digest"] == chat.key.metadata_digest
    assert body["metric_name"] == chat.metric_name
    assert body["status"] == "ready" and body["servable"] is True
    assert body["updated_at"] == chat.updated_at
    assert body["spec"]["query"] == TRACE_METADATA["query"]
    assert body["spec"]["lead_time_seconds"] == 60.0
    assert body["spec"]["prometheus_endpoint"] == "default"

    history = body["history"]
    assert history["total_points"] == chat.history_values.size == 349
    assert history["returned_points"] == min(DEFAULT_HISTORY_POINTS, 349)
    assert history["values"] == chat.history_values[-history["returned_points"] :].tolist()
    assert history["timestamps"][-1] == chat.last_sample_at

    body_forecast = body["forecast"]
    assert body_forecast["model"] == "seasonal_naive"
    assert body_forecast["levels"] == list(LEVELS)
    assert body_forecast["horizon_steps"] == forecast.horizon
    assert body_forecast["timestamps"] == [chat.forecast_start + i * 10.0 for i in range(forecast.horizon)]
    for j, quantile in enumerate(body_forecast["quantiles"]):
        assert quantile["level"] == LEVELS[j]
        assert quantile["values"] == pytest.approx(forecast.values[:, j].tolist())
    lead, node = body_forecast["horizons"]
    assert (lead["name"], lead["steps"], lead["seconds"]) == ("lead", spec.lead_steps, 60.0)
    assert (node["name"], node["steps"], node["seconds"]) == ("node", spec.node_lead_steps, 180.0)
    assert lead["timestamp"] == chat.forecast_start + (spec.lead_steps - 1) * 10.0
    assert node["band"] == pytest.approx(forecast.values[spec.node_lead_steps - 1].tolist())

    selection = body["model_selection"]
    assert selection["configured"] == "auto" and selection["chosen"] == "seasonal_naive"
    assert selection["seasonal_periods"] == [6]
    assert selection["backtest"] == {
        "model": "seasonal_naive",
        "mase": 0.87,
        "pinball": 2.9,
        "coverage": 0.95,
        "failed": None,
    }
    assert [c["model"] for c in selection["candidates"]] == ["naive", "seasonal_naive", "gbm"]
    assert selection["candidates"][2] == {
        "model": "gbm",
        "mase": None,
        "pinball": None,
        "coverage": None,
        "failed": "too short",
    }

    assert body["coverage"] == {"target": 0.95, "achieved": 0.94}
    assert body["forecast_error_mase"] == 0.91
    assert body["decision"] == {
        "planned_replicas": decision.replicas,
        "reactive_replicas": decision.reactive_replicas,
        "buffer_replicas": decision.buffer_replicas,
        "reason": decision.reason,
        "forecast_at_lead": decision.forecast_at_lead,
        "forecast_at_node_lead": decision.forecast_at_node_lead,
        "quantile_level": 0.95,
        "predictive": True,
    }
    assert body["planned_replicas"] == decision.replicas
    assert body["freshness"] == {
        "last_sample_at": chat.last_sample_at,
        "age_seconds": pytest.approx(snapshot.generated_at - (chat.last_sample_at or 0.0)),
        "stale_after_seconds": spec.stale_after_seconds,
    }
    assert body["last_error"] == chat.last_error
    assert body["durations"] == {"last_fit_seconds": 0.042, "last_update_seconds": 0.0031}
    assert body["prometheus_errors"] == 2


async def test_points_bounds_the_history(api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot) -> None:
    body = await get_json(api[1], detail_path(chat) + "?points=25")
    assert body["history"]["returned_points"] == 25
    assert body["history"]["values"] == chat.history_values[-25:].tolist()
    every = await get_json(api[1], detail_path(chat) + f"?points={MAX_HISTORY_POINTS}")
    assert every["history"]["returned_points"] == 349


async def test_digest_prefix_finds_one_trigger(api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot) -> None:
    key = chat.key
    body = await get_json(api[1], f"/api/v1/targets/{key.namespace}/{key.name}/{key.metadata_digest[:8]}")
    assert body["digest"] == key.metadata_digest


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("points=0", "between 1 and"),
        ("points=-3", "between 1 and"),
        ("points=abc", "between 1 and"),
        ("points=1.5", "between 1 and"),
        (f"points={MAX_HISTORY_POINTS + 1}", "between 1 and"),
        ("points=" + "9" * 40, "between 1 and"),
        ("points=", "between 1 and"),
        ("points=5&points=6", "more than once"),
    ],
)
async def test_bad_query_parameters_are_400(
    api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot, query: str, message: str
) -> None:
    body = await get_json(api[1], f"{detail_path(chat)}?{query}", status=400)
    assert body["status"] == 400
    assert "'points'" in body["error"] and message in body["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/targets/llm/nope",
        "/api/v1/targets/nope/chat/0123456789abcdef",
        "/api/v1/targets/llm/chat/ffffffffffffffff",
        "/api/v1/targets/llm/chat/a/extra",
        "/api/v2/targets",
        "/static/missing.js",
    ],
)
async def test_unknown_paths_are_json_404(api: tuple[str, aiohttp.ClientSession], path: str) -> None:
    body = await get_json(api[1], path, status=404)
    assert body["status"] == 404 and body["error"]


async def test_ambiguous_digest_prefix_is_409(chat: TargetSnapshot) -> None:
    variants = (trace_target(metadata={**TRACE_METADATA, "capacityPerReplica": str(c)}) for c in range(9, 500))
    twin = next(v for v in variants if v.key.metadata_digest[0] == chat.key.metadata_digest[0])
    app = create_http_app(engine_with_targets(chat, twin), telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        body = await get_json(session, f"/api/v1/targets/llm/chat/{chat.key.metadata_digest[0]}", status=409)
    assert "matches 2 triggers" in body["error"]


async def test_wrong_method_is_405_with_allow(api: tuple[str, aiohttp.ClientSession]) -> None:
    async with api[1].post("/api/v1/targets") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET"
        assert (await response.json())["status"] == 405


async def test_nan_and_missing_values_serialise_as_null(chat: TargetSnapshot) -> None:
    gap = chat.history_values.copy()
    gap[-3] = math.nan
    warming = replace(
        chat,
        history_values=gap,
        decision=None,
        forecast=None,
        achieved_coverage=None,
        forecast_error_mase=math.inf,
        status=TargetStatus.WARMING,
    )
    engine = engine_with_targets(warming)
    app = create_http_app(engine, telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        body = await get_json(session, detail_path(chat))
    assert body["history"]["values"][-3] is None
    assert body["forecast"] is None and body["decision"] is None
    assert body["planned_replicas"] is None and body["forecast_error_mase"] is None
    assert body["servable"] is False and body["status"] == "warming"


async def test_no_endpoint_configuration_is_exposed(
    api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot
) -> None:
    paths = [
        "/api/v1/targets",
        "/api/v1/targets/llm/chat",
        detail_path(chat),
        "/openapi.json",
        "/metrics",
        "/",
        "/static/app.js",
        "/healthz",
        "/readyz",
    ]
    for path in paths:
        async with api[1].get(path) as response:
            text = await response.text()
            assert SECRET_TOKEN not in text, path
            assert "prom.example" not in text, path
            assert "Authorization" not in text, path
    detail = await get_json(api[1], detail_path(chat))
    assert "Bearer xyz" in detail["spec"]["query"]


async def test_health_and_readiness(engine: SecretHoldingEngine) -> None:
    shutting_down = False
    app = create_http_app(engine, telemetry=Telemetry(process_metrics=False), ready=lambda: not shutting_down)
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        assert await get_json(session, "/healthz") == {"status": "ok"}
        ready = await get_json(session, "/readyz")
        assert ready == {"ready": True, "generation": engine.snapshot().generation, "targets": 3}
        shutting_down = True
        assert (await get_json(session, "/readyz", status=503))["ready"] is False
        assert await get_json(session, "/healthz") == {"status": "ok"}


async def test_not_ready_before_the_first_snapshot() -> None:
    engine = FakeEngine()
    app = create_http_app(engine, telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        assert (await get_json(session, "/readyz", status=503))["generation"] == 0
        engine.publish(trace_target())
        assert (await get_json(session, "/readyz"))["ready"] is True


async def test_metrics_is_prometheus_text(api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot) -> None:
    async with api[1].get("/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert f'predictive_autoscaler_planned_replicas{{target="{chat.key}",namespace="llm",scaledobject="chat"}}' in text


async def test_openapi_document_is_served(api: tuple[str, aiohttp.ClientSession]) -> None:
    document = await get_json(api[1], "/openapi.json")
    assert document["openapi"].startswith("3.")
    assert "/api/v1/targets/{namespace}/{name}/{digest}" in document["paths"]


@pytest.mark.parametrize("path", ["/", "/targets/llm/chat/0123456789abcdef"])
async def test_page_shell_loads_only_our_assets(api: tuple[str, aiohttp.ClientSession], path: str) -> None:
    async with api[1].get(path) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        html = await response.text()
    assert '<script src="/static/app.js"' in html
    assert "http://" not in html and "https://" not in html
    for asset, content_type in (("app.js", "text/javascript"), ("app.css", "text/css")):
        async with api[1].get(f"/static/{asset}") as response:
            assert response.status == 200 and response.content_type == content_type
            text = await response.text()
            assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
            assert "https://" not in text


@pytest.fixture
def served() -> TargetSnapshot:
    return served_target()


def schema_errors(body: Any, schema: str) -> list[str]:
    document = openapi_document()
    validator = OAS30Validator({"$ref": f"#/components/schemas/{schema}", "components": document["components"]})
    return [error.message for error in validator.iter_errors(body)]


async def test_detail_shows_derived_demand_beside_the_raw_signals(served: TargetSnapshot) -> None:
    app = create_http_app(engine_with_targets(served), telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        body = await get_json(session, detail_path(served))
    assert schema_errors(body, "TargetDetail") == []
    demand = body["demand"]
    assert demand["unit"] == "requests/s"
    completions, waiting = demand["signals"]
    assert (completions["kind"], completions["unit"], completions["query"]) == (
        "completions",
        "requests/s",
        SERVED_METADATA["completionsQuery"],
    )
    assert (waiting["kind"], waiting["unit"], waiting["query"]) == (
        "waiting",
        "requests",
        SERVED_METADATA["waitingQuery"],
    )
    assert completions["timestamps"] == body["history"]["timestamps"]
    assert completions["returned_points"] == body["history"]["returned_points"] == 349
    # Conservation: where the queue changed, demand is completions plus its change per second.
    derived = body["history"]["values"]
    queue = waiting["values"]
    grew = [i for i in range(1, len(queue)) if queue[i] > queue[i - 1]]
    assert grew, "the simulated replicas never fell behind"
    for i in grew:
        assert derived[i] == pytest.approx(completions["values"][i] + (queue[i] - queue[i - 1]) / 10.0)
        assert derived[i] > completions["values"][i]
    derivation = demand["derivation"]
    assert derivation["source"].startswith("completions")
    assert derivation["value"] == derived[-1]
    assert derivation["lower_bound"] is (queue[-1] > 0)
    assert derivation["description"].startswith("demand ")


async def test_detail_shows_observed_replicas_beside_the_planned_ones(served: TargetSnapshot) -> None:
    app = create_http_app(engine_with_targets(served), telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base, aiohttp.ClientSession(base) as session:
        body = await get_json(session, detail_path(served))
        fewer = await get_json(session, detail_path(served) + "?points=30")
        listing = await get_json(session, "/api/v1/targets")
    observed, decision = served.observed_replicas, served.decision
    assert observed is not None and decision is not None and served.replica_history is not None
    replicas = body["replicas"]
    assert replicas["source"] == "kubernetes" and body["spec"]["replica_source"] == "kubernetes"
    assert (replicas["ready"], replicas["desired"]) == (observed.ready, observed.desired)
    assert (replicas["planned"], replicas["reactive"]) == (decision.replicas, decision.reactive_replicas)
    history = replicas["history"]
    assert history["ready"] == served.replica_history.ready.tolist()
    assert history["desired"] == served.replica_history.desired.tolist()
    assert history["timestamps"][-1] == body["history"]["timestamps"][-1]
    assert len(set(history["ready"])) > 1, "the cluster never scaled"
    (summary,) = listing["targets"]
    assert (summary["ready_replicas"], summary["desired_replicas"]) == (observed.ready, observed.desired)
    # `points` trims every series alike.
    assert fewer["replicas"]["history"]["ready"] == history["ready"][-30:]
    assert [s["returned_points"] for s in fewer["demand"]["signals"]] == [30, 30]
    assert fewer["demand"]["signals"][1]["values"] == body["demand"]["signals"][1]["values"][-30:]


def test_a_censored_step_is_shown_as_a_lower_bound() -> None:
    now = 1_800_000_000.0
    pipeline = TargetPipeline(parse_spec(SERVED_METADATA))
    for step, (done, queued) in enumerate([(16.0, 0.0), (16.0, 5.0), (16.0, 12.0)]):
        pipeline.observe_step(
            StepSignals(
                timestamp=now - 30.0 + 10.0 * step,
                values={SignalKind.COMPLETIONS: done, SignalKind.WAITING: queued},
                replicas=ReplicaCounts(ready=2, desired=3),
            )
        )
    pipeline.decide(now)
    target = published(pipeline, namespace="llm", name="busy", metadata=SERVED_METADATA, now=now)
    body = detail_json(engine_with_targets(target).snapshot(), target, points=10)
    assert schema_errors(body, "TargetDetail") == []
    derivation = body["demand"]["derivation"]
    assert derivation["lower_bound"] is True and derivation["saturated"] is True
    assert derivation["value"] == pytest.approx(16.0 + 7.0 / 10.0)
    assert derivation["description"].startswith("demand at least 16.7 from completions")
    assert body["replicas"]["history"]["ready"] == [2.0, 2.0, 2.0]
    assert body["replicas"]["history"]["desired"] == [3.0, 3.0, 3.0]
    assert body["replicas"]["desired"] == 3 and body["replicas"]["ready"] == 2


def test_the_published_view_trims_every_series_alike() -> None:
    pipeline = TargetPipeline(parse_spec(SERVED_METADATA))
    for step in range(200):
        replicas = None if step % 7 == 0 else ReplicaCounts(ready=2 + step // 50, desired=3 + step // 50)
        values = {SignalKind.COMPLETIONS: 10.0 + step, SignalKind.WAITING: float(step % 3)}
        pipeline.observe_step(StepSignals(timestamp=1e9 + 10.0 * step, values=values, replicas=replicas))
    target = published(pipeline, namespace="llm", name="trim", metadata=SERVED_METADATA, now=1e9 + 2000.0, shown=50)
    replicas = target.replica_history
    assert replicas is not None
    assert [signal.kind for signal in target.signal_histories] == [SignalKind.COMPLETIONS, SignalKind.WAITING]
    series = [
        (target.history_timestamps, target.history_values),
        *((signal.timestamps, signal.values) for signal in target.signal_histories),
        (replicas.timestamps, replicas.ready),
        (replicas.timestamps, replicas.desired),
    ]
    for timestamps, values in series:
        assert timestamps.size == values.size == 50  # steps 150-199
        assert timestamps[-1] == 1e9 + 1990.0
        assert not values.flags.writeable  # views of the pipeline's windows, not copies
    assert target.signal_histories[0].values[-1] == 10.0 + 199
    # Step 196 had no replica count: a gap, never the count before it carried over.
    assert math.isnan(replicas.ready[196 - 150]) and math.isnan(replicas.desired[196 - 150])
    assert (replicas.ready[-1], replicas.desired[-1]) == (5.0, 6.0)


def test_a_target_never_observed_has_no_replica_history(chat: TargetSnapshot) -> None:
    body = detail_json(engine_with_targets(chat).snapshot(), chat, points=20)
    assert schema_errors(body, "TargetDetail") == []
    assert body["replicas"] == {
        "source": "none",
        "ready": None,
        "desired": None,
        "planned": chat.decision.replicas if chat.decision else None,
        "reactive": chat.decision.reactive_replicas if chat.decision else None,
        "history": None,
    }
    (arrivals,) = body["demand"]["signals"]
    assert arrivals["kind"] == "arrivals" and arrivals["values"] == body["history"]["values"]
    assert body["demand"]["derivation"] is None


def test_detail_json_is_strict_json(chat: TargetSnapshot) -> None:
    engine = engine_with_targets(chat)
    text = json.dumps(detail_json(engine.snapshot(), chat, points=10), allow_nan=False)
    assert json.loads(text)["history"]["returned_points"] == 10


# ---- `autoscaler inspect` reads this API ------------------------------------------------


async def run_inspect(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    inspect_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["inspect", *argv])
    out, err = io.StringIO(), io.StringIO()

    # The command is synchronous; the server under test runs on this event loop.
    code = await asyncio.to_thread(inspect_command.run, args, out, err)
    return code, out.getvalue(), err.getvalue()


async def test_inspect_prints_a_table_of_targets(api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot) -> None:
    code, out, _ = await run_inspect("--url", api[0])
    assert code == 0
    header, *rows = out.strip().splitlines()
    assert header.split() == [
        "TARGET",
        "STATUS",
        "MODE",
        "READY",
        "PLANNED",
        "REACTIVE",
        "BUFFER",
        "MODEL",
        "DATA",
        "AGE",
    ]
    assert len(rows) == 3
    assert chat.decision is not None
    assert rows[1].split()[:7] == [
        str(chat.key),
        "ready",
        "active",
        "-",
        str(chat.decision.replicas),
        str(chat.decision.reactive_replicas),
        str(chat.decision.buffer_replicas),
    ]


async def test_inspect_shows_one_target_with_sparklines(
    api: tuple[str, aiohttp.ClientSession], chat: TargetSnapshot
) -> None:
    code, out, _ = await run_inspect(str(chat.key), "--url", api[0], "--points", "40")
    assert code == 0
    assert chat.decision is not None
    assert f"reason    {chat.decision.reason}" in out
    assert f"planned {chat.decision.replicas}  reactive {chat.decision.reactive_replicas}" in out
    assert "seasonal_naive" in out and "gbm failed: too short" in out
    assert "94.0% achieved / 95.0% target" in out
    chart = [line for line in out.splitlines() if "│" in line and "demand" in line]
    assert len(chart) == 1
    history, forecast = chart[0].split("  demand")[0].split("│")
    assert len(history) == 40 and set(history) <= set(inspect_command.TICKS)
    assert chat.forecast is not None and len(forecast) == chat.forecast.horizon


async def test_inspect_shows_observed_replicas_and_the_demand_derivation(served: TargetSnapshot) -> None:
    app = create_http_app(engine_with_targets(served), telemetry=Telemetry(process_metrics=False))
    async with serve(app) as base:
        code, out, _ = await run_inspect(str(served.key), "--url", base, "--points", "50")
        listed, table, _ = await run_inspect("--url", base)
    assert code == listed == 0
    observed, decision, derivation = served.observed_replicas, served.decision, served.demand_derivation
    assert observed is not None and decision is not None and derivation is not None
    assert (
        f"observed  ready {observed.ready}  desired {observed.desired}  vs planned {decision.replicas}  "
        "(replicaSource kubernetes)"
    ) in out
    assert f"derived   {derivation.description} (requests/s" in out
    sparklines = {line.split()[1]: line.split()[0] for line in out.splitlines() if line.endswith(("(raw)", "replicas"))}
    assert set(sparklines) == {"completions", "waiting", "ready", "desired"}
    assert all(len(chars) == 50 and set(chars) <= set(inspect_command.TICKS) for chars in sparklines.values())
    assert table.splitlines()[1].split()[3:5] == [str(observed.ready), str(decision.replicas)]


async def test_inspect_lists_the_triggers_of_a_scaled_object(api: tuple[str, aiohttp.ClientSession]) -> None:
    code, out, _ = await run_inspect("llm/chat", "--url", api[0])
    assert code == 0
    assert out.count("llm/chat#") == 2 and "name one trigger" in out


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("llm/nope", 1, "no target for ScaledObject llm/nope (HTTP 404)"),
        ("llm/chat#ffff", 1, "no target llm/chat/ffff (HTTP 404)"),
        ("just-a-name", 2, "must be namespace/name"),
        ("llm/chat --url web/nasa", 2, "must be the daemon's address"),
        ("llm/chat --points 0", 2, "--points must be between 1 and 2000"),
    ],
)
async def test_inspect_reports_errors(
    api: tuple[str, aiohttp.ClientSession], target: str, code: int, message: str
) -> None:
    result, out, err = await run_inspect("--url", api[0], *target.split())
    assert (result, out) == (code, "")
    assert message in err


async def test_inspect_unreachable_daemon_exits_2() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out, err = await run_inspect("--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert (code, out) == (2, "")
    assert f"cannot reach the daemon at http://127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], "▁▂▃▄▅▆▇█"),
        ([5.0, None, 5.0], "▁ ▁"),
        ([-10.0, 30.0], "▁█"),
        ([], ""),
    ],
)
def test_sparkline(values: list[float | None], expected: str) -> None:
    finite = [v for v in values if v is not None]
    assert inspect_command.sparkline(values, min(finite, default=0.0), max(finite, default=0.0)) == expected


async def test_list_follows_each_new_snapshot(
    api: tuple[str, aiohttp.ClientSession], engine: SecretHoldingEngine, chat: TargetSnapshot
) -> None:
    def planned(body: Any) -> int:
        return int(next(t["planned_replicas"] for t in body["targets"] if t["key"] == str(chat.key)))

    assert chat.decision is not None
    assert planned(await get_json(api[1], "/api/v1/targets")) == chat.decision.replicas
    engine.publish(replace(chat, decision=replace(chat.decision, replicas=chat.decision.replicas + 5)))
    assert planned(await get_json(api[1], "/api/v1/targets")) == chat.decision.replicas + 5
    engine.drop(chat.key)
    assert len((await get_json(api[1], "/api/v1/targets"))["targets"]) == 2
