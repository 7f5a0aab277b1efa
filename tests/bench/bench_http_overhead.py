"""Benchmark: does serving /metrics and the inspection API slow GetMetrics down?

    .venv/bin/python -m tests.bench.bench_http_overhead [--targets 1000] [--rate 2000] [--seconds 10]

One process serves gRPC and HTTP on one event loop, as the daemon does, with a fake
engine holding `--targets` READY snapshots plus three real-trace targets with forecasts;
every gRPC call also feeds the telemetry histogram, as in the daemon. The GetMetrics
load comes from `bench_grpc`'s client process (paced, 64 callers on one connection).
Runs alternate: GetMetrics alone, then GetMetrics while a second process scrapes
/metrics and reads the API (the target list and one target's detail with 720 points)
at the given rates. Each pair is repeated, so drift on a shared machine shows.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import aiohttp
import grpc
from aiohttp import web

from autoscaler.services.http_api import create_http_app
from autoscaler.services.telemetry import Telemetry
from tests.bench.bench_grpc import NAMESPACE, Run, measure
from tests.bench.common import GET_METRICS_COLUMNS, format_table, loopback_grpc_server, percentile, pin_to_cpu
from tests.unit.services.fake_engine import FakeEngine, ready_targets
from tests.unit.services.test_http_api import TRACE_METADATA, trace_target

# --- HTTP load process -----------------------------------------------------------------


async def _http_load(
    base_url: str, detail_path: str, scrape_rate: float, api_rate: float, seconds: float
) -> dict[str, bytes]:
    latencies = {"metrics": array.array("d"), "list": array.array("d"), "detail": array.array("d")}
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def paced(session: aiohttp.ClientSession, kind: str, path: str, rate: float) -> None:
        interval = 1.0 / rate
        next_at = loop.time()
        while next_at < end:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            sent = loop.time()
            async with session.get(path) as response:
                await response.read()
                assert response.status == 200, (path, response.status)
            latencies[kind].append(loop.time() - sent)

    async with aiohttp.ClientSession(base_url) as session:
        await asyncio.gather(
            paced(session, "metrics", "/metrics", scrape_rate),
            paced(session, "list", "/api/v1/targets", api_rate / 2),
            paced(session, "detail", f"{detail_path}?points=720", api_rate / 2),
        )
    return {kind: values.tobytes() for kind, values in latencies.items()}


def _http_load_process(connection: Connection, cpu: int | None, *args: object) -> None:
    pin_to_cpu(cpu)
    result = asyncio.run(_http_load(*args))  # type: ignore[arg-type]
    connection.send(result)
    connection.close()


# --- server side -----------------------------------------------------------------------


def _summary(kind: str, raw: bytes, seconds: float) -> list[str]:
    values = array.array("d")
    values.frombytes(raw)
    ms = 1000.0
    return [
        kind,
        f"{len(values) / seconds:,.1f}",
        f"{percentile(values, 0.5) * ms:.2f}",
        f"{percentile(values, 0.99) * ms:.2f}",
        f"{max(values, default=float('nan')) * ms:.2f}",
    ]


def _scrape_cost(engine: FakeEngine, repeats: int = 20) -> tuple[int, float, float]:
    """Size of one /metrics body and the median ms to render it: every target new, then cached."""
    cold, cached = [], []
    body = ""
    for _ in range(repeats):
        telemetry = Telemetry(engine)
        started = time.perf_counter()
        telemetry.render()
        cold.append(time.perf_counter() - started)
        engine.publish()  # a new generation with the same target snapshots
        started = time.perf_counter()
        body = telemetry.render()
        cached.append(time.perf_counter() - started)
    return len(body.encode()), percentile(cold, 0.5) * 1000, percentile(cached, 0.5) * 1000


async def _run(args: argparse.Namespace) -> tuple[list[list[str]], list[list[str]]]:
    engine = FakeEngine()
    refs = ready_targets(engine, args.targets, namespace=NAMESPACE)
    chat = trace_target()
    engine.publish(
        chat,
        trace_target(metadata={**TRACE_METADATA, "capacityPerReplica": "20"}),
        trace_target(namespace="web", name="nasa", trace="nasa_http_jul95.csv"),
    )
    telemetry = Telemetry(engine)
    handler_seconds: list[float] = []

    def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
        handler_seconds.append(seconds)
        telemetry.observe_grpc(method, code, seconds)

    grpc_server = loopback_grpc_server(engine, args.targets, observe)
    grpc_port = await grpc_server.start()
    runner = web.AppRunner(create_http_app(engine, telemetry=telemetry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    key = chat.key
    detail_path = f"/api/v1/targets/{key.namespace}/{key.name}/{key.metadata_digest}"

    scrape_bytes, cold_ms, cached_ms = _scrape_cost(engine)

    grpc_rows: list[list[str]] = []
    http_rows: list[list[str]] = []
    context = multiprocessing.get_context("spawn")
    try:
        for repeat in range(args.repeats):
            for with_http in (False, True):
                label = f"{'with HTTP' if with_http else 'gRPC only'} #{repeat + 1}"
                run = Run(label, args.rate)
                if not with_http:
                    grpc_rows.append(await measure(grpc_port, refs, run, args, handler_seconds))
                    continue
                receiver, sender = context.Pipe(duplex=False)
                load_seconds = args.seconds + min(2.0, args.seconds / 4)
                process = context.Process(
                    target=_http_load_process,
                    args=(sender, args.http_cpu, base_url, detail_path, args.scrape_rate, args.api_rate, load_seconds),
                )
                process.start()
                sender.close()
                grpc_rows.append(await measure(grpc_port, refs, run, args, handler_seconds))
                result = await asyncio.get_running_loop().run_in_executor(None, receiver.recv)
                process.join()
                http_rows.extend(
                    [f"{label}: {kind}", *_summary(kind, raw, load_seconds)[1:]] for kind, raw in result.items()
                )
    finally:
        await runner.cleanup()
        await grpc_server.stop(None)
    print(
        f"/metrics with {args.targets + 3} targets: {scrape_bytes / 1024:,.0f} KiB, "
        f"rendered in {cold_ms:.1f} ms with every target changed, {cached_ms:.1f} ms with none (medians)"
    )
    return grpc_rows, http_rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rate", type=float, default=2000.0, help="GetMetrics calls/s (paced)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (after warm-up)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scrape-rate", type=float, default=1.0, help="/metrics scrapes per second")
    parser.add_argument("--api-rate", type=float, default=4.0, help="API reads per second (list and detail)")
    parser.add_argument("--server-cpu", type=int, default=0, help="-1: not pinned")
    parser.add_argument("--client-cpu", type=int, default=1, help="-1: not pinned")
    parser.add_argument("--http-cpu", type=int, default=1, help="-1: not pinned")
    args = parser.parse_args(argv)

    pin_to_cpu(args.server_cpu)
    started = time.perf_counter()
    grpc_rows, http_rows = asyncio.run(_run(args))
    print(
        f"GetMetrics at {args.rate:,.0f}/s paced, {args.callers} callers, {args.targets} targets; HTTP load: "
        f"{args.scrape_rate:g} scrapes/s and {args.api_rate:g} API reads/s "
        f"({os.cpu_count()} CPUs on the host; server on CPU {args.server_cpu}, clients on {args.client_cpu})"
    )
    print(format_table(GET_METRICS_COLUMNS, grpc_rows))
    print()
    print(format_table(["HTTP requests", "per s", "p50 ms", "p99 ms", "max ms"], http_rows))
    print(f"wall time {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
