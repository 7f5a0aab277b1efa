"""Metadata cannot make the daemon reach an address of its choosing, and no secret leaks.

- SSRF: `prometheus` in scalerMetadata only names an endpoint from the daemon's own
  configuration; a URL, an address or an unknown name is refused. The query text is
  sent as the `query` form field to the configured endpoint and never used as a URL: a
  canary listener named in it gets no connection.
- Secrets: an upstream that echoes the request's Authorization header into its error
  pages (some auth proxies do) does not get the bearer token into the inspection API or
  /metrics, although the error message itself is shown there.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.adapters.clock import SystemClock
from autoscaler.adapters.prometheus import PrometheusClient, PrometheusEndpoint
from autoscaler.domain.errors import SpecError
from autoscaler.domain.spec import parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from tests.loopback_http import serve_on_loopback

TOKEN = "tok-3f9a1c77e2b54d0c"
BASE = {"capacityPerReplica": "10", "step": "10s", "historyWindow": "1h", "leadTime": "10s"}


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data",
        "https://evil.example:9090",
        "127.0.0.1:9090",
        "10.0.0.1",
        "[::1]",
        "default/../admin",
        "Default",
        "evil.example",
        "-default",
        "a" * 64,
        "file:///etc/passwd",
    ],
)
def test_prometheus_key_accepts_only_endpoint_names(endpoint: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({**BASE, "query": "up", "prometheus": endpoint})
    assert raised.value.key == "prometheus"


class Upstream:
    """A loopback HTTP server recording every request; `answer` decides the reply."""

    def __init__(self, answer: web.Response | None = None) -> None:
        self.forms: list[dict[str, str]] = []
        self.authorizations: list[str | None] = []
        self._answer = answer
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.forms.append({name: str(value) for name, value in (await request.post()).items()})
        header = request.headers.get("Authorization")
        self.authorizations.append(header)
        if self._answer is not None and request.path.endswith("/query"):
            # An auth proxy's error page that echoes the request headers; range queries
            # (the warm start) pass, so the failure comes from live collection.
            return web.Response(status=self._answer.status, text=f"{self._answer.text} (you sent {header})")
        result_type = "matrix" if request.path.endswith("/query_range") else "vector"
        return web.json_response({"status": "success", "data": {"resultType": result_type, "result": []}})

    async def __aenter__(self) -> Upstream:
        self._runner, self.url = await serve_on_loopback(self._handle)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._runner.cleanup()


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A listening socket nobody should ever connect to."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    yield listener
    listener.close()


def canary_connections(listener: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return accepted
        connection.close()
        accepted += 1


def engine_reading(endpoint: PrometheusEndpoint) -> Engine:
    """A real engine with `endpoint` as its only source, no fit pool, ticking every 50 ms."""
    return Engine(
        sources={"default": PrometheusClient(endpoint)},
        clock=SystemClock(),
        fit_executor=None,
        settings=EngineSettings(tick_seconds=0.05, warm_start_retry_seconds=0.2),
    )


async def test_query_text_is_never_used_as_an_address(canary: socket.socket) -> None:
    canary_url = f"http://127.0.0.1:{canary.getsockname()[1]}/api/v1/query"
    hostile_queries = [canary_url, f"{canary_url}?x=1", f'up{{instance="{canary_url}"}}', f"@{canary_url}"]
    async with Upstream() as upstream:
        engine = engine_reading(PrometheusEndpoint(name="default", url=upstream.url, retries=0))
        await engine.start()
        server = GrpcServer(engine, GrpcServerSettings(host="127.0.0.1", port=0))
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
                for index, query in enumerate(hostile_queries):
                    ref = pb2.ScaledObjectRef(
                        name=f"t{index}", namespace="ssrf", scalerMetadata={**BASE, "query": query}
                    )
                    await stub.GetMetricSpec(ref, timeout=5)
                for hostile in ("http://127.0.0.1:1", canary_url):
                    metadata = {**BASE, "query": "up", "prometheus": hostile}
                    ref = pb2.ScaledObjectRef(name="p", namespace="ssrf", scalerMetadata=metadata)
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stub.GetMetricSpec(ref, timeout=5)
                    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                refused_name = pb2.ScaledObjectRef(
                    name="q", namespace="ssrf", scalerMetadata={**BASE, "query": "up", "prometheus": "other"}
                )
                with pytest.raises(grpc.aio.AioRpcError) as unknown:
                    await stub.GetMetricSpec(refused_name, timeout=5)
                assert unknown.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            deadline = asyncio.get_running_loop().time() + 10
            while {form.get("query") for form in upstream.forms} < set(hostile_queries):
                assert asyncio.get_running_loop().time() < deadline, upstream.forms
                await asyncio.sleep(0.05)
        finally:
            await server.stop(0)
            await engine.stop()
    assert canary_connections(canary) == 0
    assert all(key.namespace == "ssrf" for key in engine.snapshot().targets)


@pytest.mark.parametrize("status", [401, 403, 503])
async def test_an_echoed_bearer_token_reaches_neither_the_api_nor_metrics(tmp_path: Path, status: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    metadata = {**BASE, "query": "sum(up)"}
    key = target_key("sec", "echo", metadata)
    async with Upstream(web.Response(status=status, text="denied")) as upstream:
        endpoint = PrometheusEndpoint(
            name="default", url=upstream.url, bearer_token_file=str(token_file), retries=0, backoff_seconds=0.0
        )
        engine = engine_reading(endpoint)
        await engine.start()
        runner = web.AppRunner(create_http_app(engine, telemetry=Telemetry(engine)), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            engine.ensure_target(key, parse_spec(metadata))
            deadline = asyncio.get_running_loop().time() + 10
            while (snapshot := engine.snapshot().get(key)) is None or not snapshot.last_error:
                assert asyncio.get_running_loop().time() < deadline, (snapshot, upstream.forms)
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession(base) as session:
                pages = []
                for path in (
                    "/api/v1/targets",
                    f"/api/v1/targets/sec/echo/{key.metadata_digest}",
                    "/api/v1/targets/sec/echo",
                    "/metrics",
                    "/openapi.json",
                ):
                    async with session.get(path) as response:
                        pages.append((path, await response.text()))
        finally:
            await runner.cleanup()
            await engine.stop()
    assert upstream.authorizations and all(header == f"Bearer {TOKEN}" for header in upstream.authorizations)
    detail = dict(pages)[f"/api/v1/targets/sec/echo/{key.metadata_digest}"]
    assert "denied" in detail and "<redacted>" in detail, detail
    for path, text in pages:
        assert TOKEN not in text, path
