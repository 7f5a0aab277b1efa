"""The HTTP port's bounds, against the real aiohttp server on a loopback port chosen by the kernel.

Hostile clients are plain sockets: they send partial requests, hold connections open
or never read, which an HTTP client library would not do.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
import pytest

from autoscaler.domain.spec import target_key
from autoscaler.services.http_api import ResponseLimits, create_http_app
from autoscaler.services.http_server import BoundedHttpServer, HttpServerLimits
from autoscaler.services.telemetry import Telemetry
from tests.unit.services.test_http_api import TRACE_METADATA, SecretHoldingEngine, engine_with_targets, trace_target

IDLE_TIMEOUT = 0.5
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


@asynccontextmanager
async def bounded(
    engine: SecretHoldingEngine,
    *,
    server_limits: HttpServerLimits | None = None,
    response_limits: ResponseLimits | None = None,
) -> AsyncIterator[tuple[BoundedHttpServer, int]]:
    app = create_http_app(engine, telemetry=Telemetry(engine, process_metrics=False), limits=response_limits)
    server = BoundedHttpServer(
        app,
        host="127.0.0.1",
        port=0,
        limits=server_limits or HttpServerLimits(idle_timeout_seconds=IDLE_TIMEOUT),
    )
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


@pytest.fixture
def engine() -> SecretHoldingEngine:
    return engine_with_targets(trace_target())


def many_targets(count: int) -> SecretHoldingEngine:
    """`count` targets: enough for a /metrics body of count x 2.6 KB."""
    base = trace_target()
    return engine_with_targets(
        *(replace(base, key=target_key("load", f"t{index}", TRACE_METADATA)) for index in range(count))
    )


async def open_socket(port: int, *, receive_buffer: int | None = None) -> tuple[asyncio.StreamReader, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return asyncio.StreamReader(), sock


async def read_until_closed(sock: socket.socket, *, within: float) -> tuple[float, int]:
    """Seconds until the server closes `sock` or resets it, and the bytes it sent before."""
    loop = asyncio.get_running_loop()
    started, received = time.monotonic(), 0
    async with asyncio.timeout(within):
        while True:
            try:
                data = await loop.sock_recv(sock, 1 << 20)
            except ConnectionResetError:
                break
            if not data:
                break
            received += len(data)
    return time.monotonic() - started, received


async def closed_by_server(sock: socket.socket, *, within: float) -> float:
    return (await read_until_closed(sock, within=within))[0]


def assert_hardened(headers: Mapping[str, str]) -> None:
    lowered = {key.lower(): value for key, value in headers.items()}
    assert lowered["x-content-type-options"] == "nosniff"
    assert lowered["server"] == "predictive-autoscaler"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/api/v1/targets", 200),
        ("GET", "/api/v1/targets?points=0", 200),
        ("GET", "/api/v1/targets/llm/chat/0?points=x", 400),
        ("GET", "/metrics", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/no/such/path", 404),
        ("POST", "/api/v1/targets", 405),
    ],
)
async def test_every_response_has_nosniff_and_an_unversioned_server_header(
    engine: SecretHoldingEngine, method: str, path: str, status: int
) -> None:
    async with (
        bounded(engine) as (_, port),
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}") as response,
    ):
        assert response.status == status
        assert_hardened(response.headers)


async def test_errors_aiohttp_answers_itself_are_hardened_too(engine: SecretHoldingEngine) -> None:
    async with bounded(engine) as (_, port):
        _, sock = await open_socket(port)
        with sock:
            oversized = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
            await asyncio.get_running_loop().sock_sendall(sock, oversized)
            answer = b""
            async with asyncio.timeout(5):
                while chunk := await asyncio.get_running_loop().sock_recv(sock, 65536):
                    answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    status_line, *header_lines = head.split("\r\n")
    assert status_line.split()[1] in {"400", "431"}
    assert_hardened(dict(line.split(": ", 1) for line in header_lines))


async def test_an_idle_connection_is_closed_after_the_idle_timeout(engine: SecretHoldingEngine) -> None:
    async with bounded(engine) as (server, port):
        _, sock = await open_socket(port)
        with sock:
            elapsed = await closed_by_server(sock, within=IDLE_TIMEOUT * 10)
        assert IDLE_TIMEOUT * 0.8 <= elapsed <= IDLE_TIMEOUT * 4
        await asyncio.sleep(0.05)
        assert server.open_connections == 0


async def test_headers_sent_slowly_are_cut_off_at_the_idle_timeout(engine: SecretHoldingEngine) -> None:
    """Slowloris: a byte of header every 50 ms never completes a request; the timer is not reset by it."""
    async with bounded(engine) as (_, port):
        _, sock = await open_socket(port)
        loop = asyncio.get_running_loop()

        async def trickle() -> None:
            await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\n")
            for _ in range(200):
                await asyncio.sleep(0.05)
                await loop.sock_sendall(sock, b"X")

        with sock:
            sender = asyncio.create_task(trickle())
            try:
                elapsed = await closed_by_server(sock, within=IDLE_TIMEOUT * 10)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        assert elapsed <= IDLE_TIMEOUT * 4


async def test_a_kept_alive_connection_serves_requests_then_times_out(engine: SecretHoldingEngine) -> None:
    async with bounded(engine) as (_, port):
        _, sock = await open_socket(port)
        loop = asyncio.get_running_loop()
        with sock:
            await loop.sock_sendall(sock, HEALTHZ)
            first = await loop.sock_recv(sock, 65536)
            assert first.startswith(b"HTTP/1.1 200")
            elapsed = await closed_by_server(sock, within=IDLE_TIMEOUT * 10)
        assert elapsed <= IDLE_TIMEOUT * 4


async def test_connections_over_the_cap_are_closed_at_once(engine: SecretHoldingEngine) -> None:
    limits = HttpServerLimits(max_connections=3, idle_timeout_seconds=30)
    async with bounded(engine, server_limits=limits) as (server, port):
        held = [(await open_socket(port))[1] for _ in range(3)]
        await asyncio.sleep(0.05)
        assert server.open_connections == 3
        _, extra = await open_socket(port)
        with extra:
            assert await closed_by_server(extra, within=2) < 1
        assert server.refused == 1
        held.pop().close()
        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        for sock in held:
            sock.close()


async def test_a_large_body_is_rendered_once_per_snapshot_and_shared() -> None:
    engine = many_targets(50)
    telemetry = Telemetry(engine, process_metrics=False)
    first = telemetry.exposition()[1]
    assert telemetry.exposition()[1] is first
    engine.publish(trace_target(name="new"))
    assert telemetry.exposition()[1] is not first


async def test_a_streamed_body_arrives_whole(engine: SecretHoldingEngine) -> None:
    engine = many_targets(200)
    small_chunks = ResponseLimits(chunk_bytes=4096)
    async with bounded(engine, response_limits=small_chunks) as (_, port), aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            body = await response.read()
            assert response.content_length == len(body) > 200 * 2000
        async with session.get(f"http://127.0.0.1:{port}/api/v1/targets") as response:
            listing = await response.json()
    assert body.endswith(Telemetry(engine, process_metrics=False).targets.encoded())
    assert len(listing["targets"]) == 200


async def test_readers_that_never_read_are_capped_and_dropped_after_the_write_timeout() -> None:
    """Each stalled reader holds a streaming slot and a few chunks of buffer, never the body."""
    engine = many_targets(4000)  # about 10 MB of /metrics: more than the kernel buffers on loopback
    limits = ResponseLimits(max_streaming_responses=2, write_timeout_seconds=1.0)
    async with bounded(engine, response_limits=limits, server_limits=HttpServerLimits()) as (_, port):
        loop = asyncio.get_running_loop()
        stalled = []
        for _ in range(2):
            _, sock = await open_socket(port, receive_buffer=4096)
            await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            stalled.append(sock)
        await asyncio.sleep(0.5)  # both are now blocked on a full socket

        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 503
                assert response.headers["Retry-After"] == "1"
                assert "2 large responses" in (await response.json())["error"]
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200  # small answers do not need a slot

            await asyncio.sleep(limits.write_timeout_seconds + 0.5)
            body_size = len(b"".join(Telemetry(engine, process_metrics=False).exposition()))
            for sock in stalled:
                with sock:
                    # Dropped: what was already in the kernel's buffers, then a reset, never the whole body.
                    _, received = await read_until_closed(sock, within=5)
                assert received < body_size

            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert len(await response.read()) > body_size * 0.99
