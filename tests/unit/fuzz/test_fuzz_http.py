"""Hostile HTTP requests on the inspection API: every answer is JSON, 2xx or 4xx, never 5xx.

The app (over the fake engine, holding one READY target) runs on its own loop in a
thread; hypothesis drives it with a blocking client that sends paths and query strings
as raw bytes, so nothing is normalised on the way.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import string
import threading
import urllib.parse
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from tests.unit.services.fake_engine import FakeEngine, key_and_spec, metadata, target_snapshot

PATH_PREFIXES = ["/api/v1/targets", "/api/v1/targets/llm", "/api/v1/targets/llm/chat", "/api/v1", "/", "/targets"]
PARAMETERS = st.sampled_from(["points", "namespace", "format", "", "points[]", "%00"])
SEGMENT = st.text(alphabet=string.printable + "ä€\u202e", max_size=30).map(
    lambda text: urllib.parse.quote(text, safe="")
)
QUERY_VALUE = st.one_of(
    st.sampled_from(["0", "1", "-1", "20000", "20001", "1e3", "0x10", "9" * 40, "", "١٢", " 5"]).map(
        urllib.parse.quote
    ),
    st.text(max_size=20).map(lambda text: urllib.parse.quote(text, safe="")),
)
QUERY = st.lists(st.tuples(PARAMETERS, QUERY_VALUE), max_size=4).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
)


class AppThread:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http-fuzz", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> int:
        engine = FakeEngine()
        key, spec = key_and_spec("llm", "chat", metadata())
        engine.publish(target_snapshot(key, spec))
        self.digest = key.metadata_digest
        self._runner = web.AppRunner(create_http_app(engine, telemetry=Telemetry(engine)), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def app() -> Iterator[AppThread]:
    running = AppThread()
    yield running
    running.stop()


def get(app: AppThread, target: str, method: str = "GET") -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def assert_json_client_answer(status: int, content_type: str, body: bytes, target: str) -> None:
    assert status < 500, (target, status, body[:300])
    if status >= 400:
        assert content_type.startswith("application/json"), (target, status, content_type)
        error = json.loads(body)
        assert error["status"] == status and error["error"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PATH_PREFIXES), segments=st.lists(SEGMENT, max_size=4), query=QUERY)
def test_arbitrary_paths_and_parameters_answer_json_without_5xx(
    app: AppThread, prefix: str, segments: list[str], query: str
) -> None:
    path = "/".join([prefix.rstrip("/"), *segments]) or "/"
    target = f"{path}?{query}" if query else path
    assert_json_client_answer(*get(app, target), target)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=QUERY)
def test_target_detail_parameters_answer_json_without_5xx(app: AppThread, query: str) -> None:
    target = f"/api/v1/targets/llm/chat/{app.digest}?{query}"
    assert_json_client_answer(*get(app, target), target)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_writes_are_refused_with_json(app: AppThread, method: str) -> None:
    status, content_type, body = get(app, "/api/v1/targets", method)
    assert status == 405
    assert_json_client_answer(status, content_type, body, method)


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/targets/" + "a" * 4000,
        "/api/v1/targets/llm/chat/x?points=" + "9" * 4000,
        "/api/v1/targets/llm/chat/x?" + "&".join(["points=1"] * 500),
        "/api/v1/targets/%2e%2e/%2e%2e/etc/passwd",
        "/api/v1/targets/llm/chat/%00",
    ],
    ids=["long-path", "long-points", "repeated-points", "dot-segments", "nul"],
)
def test_oversized_and_odd_requests_answer_json_4xx(app: AppThread, target: str) -> None:
    status, content_type, body = get(app, target)
    assert 400 <= status < 500
    assert_json_client_answer(status, content_type, body, target)


def test_request_line_over_the_server_limit_is_refused(app: AppThread) -> None:
    """aiohttp's parser bounds the request line (8190 bytes) before our middleware runs."""
    status, _, _ = get(app, "/api/v1/targets/" + "a" * 9000)
    assert status in (400, 414)
