"""Benchmark: what clients that never read /metrics make the daemon hold, and what honest callers see meanwhile.

    .venv/bin/python -m tests.bench.bench_http_slow_readers [--targets 10000] [--clients 40]

The HTTP app runs on the daemon's bounded server (`BoundedHttpServer`, `ResponseLimits`)
on loopback, over a fake engine holding `--targets` READY snapshots (no traces: the
body is label text). `--clients` sockets with a 4 KiB receive buffer each send
`GET /metrics` and never read. The table gives the process RSS before, while they stall
and after the write timeout, how they were answered (503 for want of a streaming slot,
or streamed and then dropped), the most bytes any of them received, and the latency of
an honest client's /healthz and /metrics during the stall.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence

import aiohttp

from autoscaler.services.http_api import ResponseLimits, create_http_app
from autoscaler.services.http_server import BoundedHttpServer, HttpServerLimits
from autoscaler.services.telemetry import Telemetry
from tests.bench.common import format_table, percentile
from tests.unit.services.fake_engine import FakeEngine, ready_targets

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


async def stalled_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
    return sock


async def drain(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection, within `seconds`."""
    loop, received = asyncio.get_running_loop(), bytearray()
    try:
        async with asyncio.timeout(seconds):
            while chunk := await loop.sock_recv(sock, 1 << 20):
                received += chunk
    except ConnectionResetError:
        return bytes(received), True
    except TimeoutError:
        return bytes(received), False
    return bytes(received), True


async def honest_latencies(base: str, path: str, count: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            started = time.perf_counter()
            async with session.get(base + path) as response:
                await response.read()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def run(args: argparse.Namespace) -> None:
    engine = FakeEngine()
    ready_targets(engine, args.targets)
    telemetry = Telemetry(engine)
    body_bytes = sum(len(part) for part in telemetry.exposition())
    limits = ResponseLimits(max_streaming_responses=args.max_streaming, write_timeout_seconds=args.write_timeout)
    server = BoundedHttpServer(
        create_http_app(engine, telemetry=telemetry, limits=limits),
        host="127.0.0.1",
        port=0,
        limits=HttpServerLimits(),
    )
    port = await server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        before = rss_mib()
        readers = [await stalled_reader(port) for _ in range(args.clients)]
        await asyncio.sleep(0.5)
        during = rss_mib()
        healthz = await honest_latencies(base, "/healthz", 50)
        metrics = await honest_latencies(base, "/metrics", 5)  # 503 while every slot is held
        await asyncio.sleep(args.write_timeout + 0.5)
        after = rss_mib()
        answers = [await drain(sock, 1.0) for sock in readers]
        for sock in readers:
            sock.close()
    finally:
        await server.stop()
    busy = sum(1 for data, _ in answers if data.startswith(b"HTTP/1.1 503"))
    streamed = [(data, closed) for data, closed in answers if data.startswith(b"HTTP/1.1 200")]
    most = max((len(data) for data, _ in streamed), default=0)
    print(
        f"/metrics body {body_bytes / 1e6:.1f} MB ({args.targets} targets); {args.clients} clients never read; "
        f"{args.max_streaming} streaming slots, write timeout {args.write_timeout:g} s"
    )
    rows = [
        ["RSS MiB", f"{before:.0f}", f"{during:.0f}", f"{after:.0f}"],
        ["answered 503 (no slot)", "", f"{busy}", ""],
        ["streamed, then dropped", "", "", f"{sum(1 for _, closed in streamed if closed)} of {len(streamed)}"],
        ["most bytes a stalled client got", "", "", f"{most / 1e6:.2f} MB"],
        ["honest /healthz p50 / p99 ms", "", f"{percentile(healthz, 0.5):.2f} / {percentile(healthz, 0.99):.2f}", ""],
        ["honest /metrics (503: slots held) p50 ms", "", f"{percentile(metrics, 0.5):.1f}", ""],
    ]
    print(format_table(["", "before", "while stalled", "after the timeout"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--max-streaming", type=int, default=ResponseLimits().max_streaming_responses)
    parser.add_argument("--write-timeout", type=float, default=5.0, help="seconds (the daemon's default is 30)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # one "dropped a reader" line per stalled client
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
