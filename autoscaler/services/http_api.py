"""The inspection HTTP API: JSON views of the engine's latest snapshot.

Handlers only read the published `EngineSnapshot` and reshape it; they never fit,
forecast or plan. Nothing here knows the Prometheus endpoint configuration, so no URL,
header or token can leak through a response. The OpenAPI document in `openapi.py`
describes every response built here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from autoscaler.domain.signals import SignalKind
from autoscaler.domain.snapshot import DemandDerivation, EngineSnapshot, ReplicaHistory, SignalHistory, TargetSnapshot
from autoscaler.domain.spec import ScalerSpec
from autoscaler.domain.types import Decision, FloatArray, Forecast, MetricKind, ModelScore, TargetKey
from autoscaler.engine.api import EngineView
from autoscaler.services import page
from autoscaler.services.authn import Authenticator
from autoscaler.services.http_server import apply_base_headers
from autoscaler.services.openapi import (
    DEFAULT_HISTORY_POINTS,
    MAX_HISTORY_POINTS,
    MAX_QUERY_VALUE_LENGTH,
    UNAUTHENTICATED_PATHS,
    openapi_document,
)
from autoscaler.services.telemetry import CONTENT_TYPE, Telemetry, data_age_seconds, default_telemetry

log = logging.getLogger(__name__)

Json = dict[str, Any]
API_PREFIX = "/api/v1"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
MAX_REQUEST_BODY_BYTES = 4096
SIGNAL_UNITS: dict[SignalKind, str] = {
    SignalKind.ARRIVALS: "requests/s",
    SignalKind.COMPLETIONS: "requests/s",
    SignalKind.WAITING: "requests",
    SignalKind.RUNNING: "requests",
    SignalKind.UTILIZATION: "fraction",
    SignalKind.PODS: "pods",
}
# Offered demand is in the unit of capacityPerReplica: requests/s for a load, replicas
# for a target measured by utilisation alone.
DEMAND_UNITS = {MetricKind.LOAD: "requests/s", MetricKind.UTILISATION: "replicas"}


class BadRequestError(ValueError):
    """A query parameter failed validation; the message names it."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"query parameter {parameter!r}: {reason}")
        self.parameter = parameter


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an unknown number is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _finite_list(values: Iterable[float]) -> list[float | None]:
    return [value if math.isfinite(value) else None for value in values]


def _newest(values: FloatArray, points: int) -> list[float | None]:
    return _finite_list(values[-points:].tolist())


def target_path(target: TargetSnapshot) -> str:
    key = target.key
    return f"{key.namespace}/{key.name}/{key.metadata_digest}"


def _summary_fields(target: TargetSnapshot) -> Json:
    """A target's summary except its data age, which moves with every snapshot."""
    decision = target.decision
    observed = target.observed_replicas
    return {
        "key": str(target.key),
        "namespace": target.key.namespace,
        "name": target.key.name,
        "digest": target.key.metadata_digest,
        "metric_name": target.metric_name,
        "status": target.status.value,
        "mode": "shadow" if target.spec.shadow else "active",
        "planned_replicas": decision.replicas if decision else None,
        "decided_at": target.decided_at,
        "reactive_replicas": decision.reactive_replicas if decision else None,
        "buffer_replicas": decision.buffer_replicas if decision else None,
        "ready_replicas": observed.ready if observed else None,
        "desired_replicas": observed.desired if observed else None,
        "model": target.chosen_model,
        "last_sample_at": target.last_sample_at,
        "api_url": f"{API_PREFIX}/targets/{target_path(target)}",
        "page_url": f"/targets/{target_path(target)}",
    }


def summary_json(snapshot: EngineSnapshot, target: TargetSnapshot) -> Json:
    return {**_summary_fields(target), "data_age_seconds": _finite(data_age_seconds(snapshot, target))}


def _spec_json(spec: ScalerSpec) -> Json:
    return {
        "query": spec.query,
        "preset": spec.preset,
        "prometheus_endpoint": spec.prometheus,
        "metric_kind": spec.metric_kind.value,
        "capacity_per_replica": spec.capacity_per_replica,
        "target_coverage": spec.target_coverage,
        "lead_time_seconds": spec.lead_time_seconds,
        "node_lead_time_seconds": spec.node_lead_time_seconds,
        "pods_per_node": spec.pods_per_node,
        "max_buffer_replicas": spec.max_buffer_replicas,
        "history_window_seconds": spec.history_window_seconds,
        "step_seconds": spec.step_seconds,
        "model": spec.model,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "activation_threshold": spec.activation_threshold,
        "scale_down_stabilization_seconds": spec.scale_down_stabilization_seconds,
        "scale_down_percent_per_minute": spec.scale_down_percent_per_minute,
        "stale_after_seconds": spec.stale_after_seconds,
        "mode": "shadow" if spec.shadow else "active",
        "workload_name": spec.workload_name,
        "replica_source": spec.replica_source.value,
    }


def _history_json(target: TargetSnapshot, points: int) -> Json:
    total = int(target.history_values.shape[0])
    start = max(0, total - points)
    return {
        "step_seconds": target.spec.step_seconds,
        "total_points": total,
        "returned_points": total - start,
        "timestamps": _finite_list(target.history_timestamps[start:].tolist()),
        "values": _finite_list(target.history_values[start:].tolist()),
    }


def _signal_json(signal: SignalHistory, queries: dict[SignalKind, str], points: int) -> Json:
    values = _newest(signal.values, points)
    return {
        "kind": signal.kind.value,
        "unit": SIGNAL_UNITS[signal.kind],
        "query": queries.get(signal.kind),
        "returned_points": len(values),
        "timestamps": _newest(signal.timestamps, points),
        "values": values,
    }


def _derivation_json(derivation: DemandDerivation | None) -> Json | None:
    if derivation is None:
        return None
    return {
        "value": _finite(derivation.value),
        "source": derivation.source,
        "description": derivation.description,
        "lower_bound": derivation.lower_bound,
        "saturated": derivation.saturated,
        "missing_pods": derivation.missing_pods,
    }


def _demand_json(target: TargetSnapshot, points: int) -> Json:
    """Offered demand (the `history`), how its newest step was derived, and the raw signals."""
    queries = {signal.kind: signal.query for signal in target.spec.signals}
    return {
        "unit": DEMAND_UNITS[target.spec.metric_kind],
        "derivation": _derivation_json(target.demand_derivation),
        "signals": [_signal_json(signal, queries, points) for signal in target.signal_histories],
    }


def _replica_history_json(history: ReplicaHistory | None, points: int) -> Json | None:
    if history is None:
        return None
    ready = _newest(history.ready, points)
    return {
        "returned_points": len(ready),
        "timestamps": _newest(history.timestamps, points),
        "ready": ready,
        "desired": _newest(history.desired, points),
    }


def _replicas_json(target: TargetSnapshot, points: int) -> Json:
    """The scale target's replicas as observed, beside what the decision plans."""
    observed, decision = target.observed_replicas, target.decision
    return {
        "source": target.spec.replica_source.value,
        "ready": observed.ready if observed else None,
        "desired": observed.desired if observed else None,
        "planned": decision.replicas if decision else None,
        "reactive": decision.reactive_replicas if decision else None,
        "history": _replica_history_json(target.replica_history, points),
    }


def _horizon_json(name: str, seconds: float, steps: int, forecast: Forecast, start: float) -> Json:
    """The band at one planning horizon; null values when the forecast is shorter."""
    inside = steps <= forecast.horizon
    return {
        "name": name,
        "seconds": seconds,
        "steps": steps,
        "timestamp": start + (steps - 1) * forecast.step_seconds,
        "band": _finite_list(forecast.values[steps - 1].tolist()) if inside else None,
    }


def _forecast_json(target: TargetSnapshot) -> Json | None:
    forecast, start = target.forecast, target.forecast_start
    if forecast is None or start is None:
        return None
    spec = target.spec
    columns = forecast.values.T.tolist()
    return {
        "model": forecast.model,
        "start": start,
        "step_seconds": forecast.step_seconds,
        "horizon_steps": forecast.horizon,
        "timestamps": [start + step * forecast.step_seconds for step in range(forecast.horizon)],
        "levels": list(forecast.levels),
        "quantiles": [
            {"level": level, "values": _finite_list(column)}
            for level, column in zip(forecast.levels, columns, strict=True)
        ],
        "horizons": [
            _horizon_json("lead", spec.lead_time_seconds, spec.lead_steps, forecast, start),
            _horizon_json(
                "node",
                spec.lead_time_seconds + spec.node_lead_time_seconds,
                spec.node_lead_steps,
                forecast,
                start,
            ),
        ],
    }


def _score_json(score: ModelScore) -> Json:
    return {
        "model": score.model,
        "mase": _finite(score.mase),
        "pinball": _finite(score.pinball),
        "coverage": _finite(score.coverage),
        "failed": score.failed,
    }


def _model_json(target: TargetSnapshot) -> Json:
    chosen = next((s for s in target.model_scores if s.model == target.chosen_model), None)
    return {
        "configured": target.spec.model,
        "chosen": target.chosen_model,
        "seasonal_periods": list(target.seasonal_periods),
        "backtest": _score_json(chosen) if chosen else None,
        "candidates": [_score_json(score) for score in target.model_scores],
    }


def _decision_json(decision: Decision | None) -> Json | None:
    if decision is None:
        return None
    return {
        "planned_replicas": decision.replicas,
        "reactive_replicas": decision.reactive_replicas,
        "buffer_replicas": decision.buffer_replicas,
        "reason": decision.reason,
        "forecast_at_lead": _finite(decision.forecast_at_lead),
        "forecast_at_node_lead": _finite(decision.forecast_at_node_lead),
        "quantile_level": decision.quantile_level,
        "predictive": decision.predictive,
    }


def detail_json(snapshot: EngineSnapshot, target: TargetSnapshot, *, points: int) -> Json:
    return {
        **summary_json(snapshot, target),
        "generated_at": snapshot.generated_at,
        "generation": snapshot.generation,
        "updated_at": target.updated_at,
        "servable": target.servable,
        "spec": _spec_json(target.spec),
        "freshness": {
            "last_sample_at": target.last_sample_at,
            "age_seconds": _finite(data_age_seconds(snapshot, target)),
            "stale_after_seconds": target.spec.stale_after_seconds,
        },
        "history": _history_json(target, points),
        "demand": _demand_json(target, points),
        "replicas": _replicas_json(target, points),
        "forecast": _forecast_json(target),
        "model_selection": _model_json(target),
        "coverage": {
            "target": target.target_coverage,
            "achieved": _finite(target.achieved_coverage),
        },
        "forecast_error_mase": _finite(target.forecast_error_mase),
        "decision": _decision_json(target.decision),
        "last_error": target.last_error,
        "durations": {
            "last_fit_seconds": _finite(target.last_fit_seconds),
            "last_update_seconds": _finite(target.last_update_seconds),
        },
        "prometheus_errors": target.prometheus_errors,
    }


def _json_text(body: Json) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def _json(body: Json, *, status: int = 200) -> web.Response:
    return web.Response(
        text=_json_text(body), status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def error_response(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    response = _json({"status": status, "error": message}, status=status)
    if headers:
        response.headers.update(headers)
    return response


def _points(request: web.Request) -> int:
    values = request.query.getall("points", [])
    if not values:
        return DEFAULT_HISTORY_POINTS
    if len(values) > 1:
        raise BadRequestError("points", "given more than once")
    text = values[0]
    if len(text) > MAX_QUERY_VALUE_LENGTH or not text.isascii() or not text.isdigit():
        raise BadRequestError("points", f"must be an integer between 1 and {MAX_HISTORY_POINTS}")
    points = int(text)
    if not 1 <= points <= MAX_HISTORY_POINTS:
        raise BadRequestError("points", f"must be an integer between 1 and {MAX_HISTORY_POINTS}")
    return points


class _Summaries:
    """Each target's summary as JSON text, reused until the engine publishes a new snapshot
    of that target: a list of a thousand targets is then joined, not re-serialised.
    """

    def __init__(self) -> None:
        self._texts: dict[TargetKey, tuple[TargetSnapshot, str]] = {}

    def listing(self, snapshot: EngineSnapshot, targets: Iterable[TargetSnapshot], fields: Json) -> str:
        """`{...fields, generated_at, generation, targets: [summaries sorted by key]}` as text."""
        parts = []
        for target in sorted(targets, key=lambda t: (t.key.namespace, t.key.name, t.key.metadata_digest)):
            cached = self._texts.get(target.key)
            if cached is None or cached[0] is not target:
                cached = (target, _json_text(_summary_fields(target))[:-1])
                self._texts[target.key] = cached
            age = _finite(data_age_seconds(snapshot, target))
            parts.append(f'{cached[1]},"data_age_seconds":{"null" if age is None else repr(age)}}}')
        head = _json_text({**fields, "generated_at": snapshot.generated_at, "generation": snapshot.generation})
        return f'{head[:-1]},"targets":[{",".join(parts)}]}}'

    def forget_removed(self, snapshot: EngineSnapshot) -> None:
        self._texts = {key: text for key, text in self._texts.items() if key in snapshot.targets}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseLimits:
    """What a slow or stalled reader can make the daemon hold.

    A body larger than one chunk is written a chunk at a time, waiting for the socket to
    drain, so a reader that does not read holds at most a few chunks of send buffer. At
    most `max_streaming_responses` such bodies are in flight (more get 503 with
    Retry-After), and one that is not written within `write_timeout_seconds` is dropped
    with its connection.
    """

    chunk_bytes: int = 64 * 1024
    max_streaming_responses: int = 8
    write_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1 or self.max_streaming_responses < 1 or not self.write_timeout_seconds > 0:
            raise ValueError("response limits must be positive")


class _Handlers:
    def __init__(
        self,
        engine: EngineView,
        telemetry: Telemetry,
        ready: Callable[[], bool],
        *,
        limits: ResponseLimits,
        authenticated: bool,
    ) -> None:
        self._engine = engine
        self._telemetry = telemetry
        self._ready = ready
        self._limits = limits
        self._streaming = asyncio.Semaphore(limits.max_streaming_responses)
        self._openapi = json.dumps(openapi_document(authenticated=authenticated))
        # Rendering JSON or /metrics for a thousand targets takes tens of milliseconds of
        # Python. On this thread the event loop keeps answering KEDA between GIL
        # switches instead of stalling; one worker means the caches below have a
        # single writer.
        self._render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-render")
        self._summaries = _Summaries()  # used on the render thread only
        self._listing: tuple[EngineSnapshot, bytes] | None = None  # the whole list, once per snapshot

    async def _rendered(self, request: web.Request, build: Callable[[], str], content_type: str) -> web.StreamResponse:
        text = await asyncio.get_running_loop().run_in_executor(self._render_pool, build)
        return await self._send(request, (text.encode(),), content_type)

    async def _send(self, request: web.Request, parts: tuple[bytes, ...], content_type: str) -> web.StreamResponse:
        """Answer `parts` joined; a large body is streamed within `ResponseLimits`."""
        headers = {"Cache-Control": "no-store", "Content-Type": content_type}
        size = sum(len(part) for part in parts)
        if size <= self._limits.chunk_bytes:
            return web.Response(body=b"".join(parts), headers=headers)
        if self._streaming.locked():
            limit = self._limits.max_streaming_responses
            return error_response(
                503, f"{limit} large responses are already being sent; retry shortly", headers={"Retry-After": "1"}
            )
        async with self._streaming:
            response = web.StreamResponse(headers=headers)
            response.content_length = size
            try:
                async with asyncio.timeout(self._limits.write_timeout_seconds):
                    await response.prepare(request)
                    for part in parts:
                        await self._write_chunks(response, memoryview(part))
                    await response.write_eof()
            except TimeoutError:
                # A reader this slow holds buffers and a slot for nothing: drop it and
                # whatever is still queued for it.
                log.warning(
                    "dropped a reader of %s: not written in %.0f s", request.path, self._limits.write_timeout_seconds
                )
                if request.transport is not None:
                    request.transport.abort()
            return response

    async def _write_chunks(self, response: web.StreamResponse, body: memoryview) -> None:
        chunk = self._limits.chunk_bytes
        for start in range(0, len(body), chunk):
            await response.write(body[start : start + chunk])  # waits while the socket is full

    def _whole_listing(self, snapshot: EngineSnapshot) -> bytes:
        if self._listing is None or self._listing[0] is not snapshot:
            self._summaries.forget_removed(snapshot)
            self._listing = (snapshot, self._summaries.listing(snapshot, snapshot.targets.values(), {}).encode())
        return self._listing[1]

    async def list_targets(self, request: web.Request) -> web.StreamResponse:
        snapshot = self._engine.snapshot()
        body = await asyncio.get_running_loop().run_in_executor(self._render_pool, self._whole_listing, snapshot)
        return await self._send(request, (body,), JSON_CONTENT_TYPE)

    async def scaled_object(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        snapshot = self._engine.snapshot()
        triggers = [t for t in snapshot.targets.values() if t.key.namespace == namespace and t.key.name == name]
        if not triggers:
            return error_response(404, f"no target for ScaledObject {namespace}/{name}")
        fields = {"namespace": namespace, "name": name}
        return await self._rendered(
            request, lambda: self._summaries.listing(snapshot, triggers, fields), JSON_CONTENT_TYPE
        )

    async def target(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        digest = request.match_info["digest"]
        points = _points(request)
        snapshot = self._engine.snapshot()
        matches = [
            t
            for t in snapshot.targets.values()
            if t.key.namespace == namespace and t.key.name == name and t.key.metadata_digest.startswith(digest)
        ]
        where = f"{namespace}/{name}/{digest}"
        if not matches:
            return error_response(404, f"no target {where}")
        if len(matches) > 1:
            return error_response(409, f"digest prefix {digest!r} matches {len(matches)} triggers of {where}")
        return await self._rendered(
            request, lambda: _json_text(detail_json(snapshot, matches[0], points=points)), JSON_CONTENT_TYPE
        )

    async def close(self, app: web.Application) -> None:
        self._render_pool.shutdown(wait=False, cancel_futures=True)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        snapshot = self._engine.snapshot()
        ready = snapshot.generation > 0 and self._ready()
        body = {"ready": ready, "generation": snapshot.generation, "targets": len(snapshot.targets)}
        return _json(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        parts = await asyncio.get_running_loop().run_in_executor(self._render_pool, self._telemetry.exposition)
        return await self._send(request, parts, CONTENT_TYPE)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error, routing ones included, answers JSON with a message a person can act on."""
    try:
        return await handler(request)
    except BadRequestError as exc:
        return error_response(400, str(exc))
    except web.HTTPMethodNotAllowed as exc:
        return error_response(405, f"method {exc.method} not allowed", headers={"Allow": exc.headers["Allow"]})
    except web.HTTPNotFound:
        return error_response(404, f"no such path {request.path!r}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.exception("inspection API failed on %s", request.path)
        return error_response(500, "internal error; see the daemon log")


async def _base_headers(request: web.Request, response: web.StreamResponse) -> None:
    apply_base_headers(response)


def _authenticated(authenticator: Authenticator) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNAUTHENTICATED_PATHS:
            return await handler(request)
        verdict = await authenticator.check(
            request.headers.get("Authorization"), path=request.path, verb=request.method.lower()
        )
        if verdict.allowed:
            return await handler(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="predictive-autoscaler"'} if verdict.status == 401 else None
        return error_response(verdict.status, verdict.message, headers=challenge)

    return check


def create_http_app(
    engine: EngineView,
    *,
    telemetry: Telemetry | None = None,
    ready: Callable[[], bool] | None = None,
    limits: ResponseLimits | None = None,
    authenticator: Authenticator | None = None,
) -> web.Application:
    """The daemon's HTTP application: API, OpenAPI, health, /metrics and the page.

    /readyz is ready once the engine has published a snapshot (generation > 0) and
    `ready` (the daemon's lifecycle: False while starting or shutting down) agrees.
    Without `telemetry` /metrics serves the process-wide telemetry, whose per-target
    part `telemetry.install_collector` connects to the engine. With `authenticator`
    every path except /healthz and /readyz needs a bearer token whose user RBAC allows
    to `get` that path (see docs/inspection.md).
    """
    handlers = _Handlers(
        engine,
        telemetry or default_telemetry(),
        ready or (lambda: True),
        limits=limits or ResponseLimits(),
        authenticated=authenticator is not None,
    )
    # No route reads a request body: refuse any beyond a few kilobytes.
    app = web.Application(middlewares=[_json_errors], client_max_size=MAX_REQUEST_BODY_BYTES)
    if authenticator is not None:
        app.middlewares.append(_authenticated(authenticator))
    app.on_response_prepare.append(_base_headers)
    routes = [
        (f"{API_PREFIX}/targets", handlers.list_targets),
        (f"{API_PREFIX}/targets/{{namespace}}/{{name}}", handlers.scaled_object),
        (f"{API_PREFIX}/targets/{{namespace}}/{{name}}/{{digest}}", handlers.target),
        ("/openapi.json", handlers.openapi),
        ("/healthz", handlers.healthz),
        ("/readyz", handlers.readyz),
        ("/metrics", handlers.metrics),
    ]
    for path, handler in routes:
        app.router.add_get(path, handler, allow_head=False)
    page.add_routes(app)
    app.on_cleanup.append(handlers.close)
    return app
