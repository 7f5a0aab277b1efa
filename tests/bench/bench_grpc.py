"""Benchmark: GetMetrics latency and throughput with 1,000 registered targets.

    .venv/bin/python -m tests.bench.bench_grpc [--targets 1000] [--callers 64] [--seconds 10] [--uvloop]

The server (with a fake engine holding READY snapshots) runs in this process pinned to
one CPU; the grpc.aio client runs in a separate process pinned to another, so the two
do not share a GIL or a core. 64 concurrent callers share one HTTP/2 connection, as
KEDA's operator does. Two kinds of run:

- paced: the callers together send a fixed rate (open loop), the way KEDA's polling
  arrives; latency is measured per call at the client, and in the handler.
- saturated: every caller sends its next call as soon as the last returns (closed
  loop); this finds the most calls/s, with latency = callers / throughput.

CPU time per call (both processes, gRPC's C threads included) is printed too: on a
shared host it says what a whole core would sustain even when latency is queueing
behind other work. Memory per target is measured with tracemalloc over building the spec, the resolver
entry and the snapshot as the engine publishes it: the latest `--history-points` of
history (the engine's `history_points_shown`, 720 by default). The engine's own
history buffer (7 days at 60 s steps by default) is not part of the snapshot.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import multiprocessing
import os
import random
import resource
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc

from autoscaler.services.grpc_scaler import TargetResolver, pb2, pb2_grpc
from tests.bench.common import GET_METRICS_COLUMNS, format_table, loopback_grpc_server, percentile, pin_to_cpu
from tests.unit.services.fake_engine import FakeEngine, decision, key_and_spec, metadata, ready_targets, target_snapshot

NAMESPACE = "bench"


@dataclass(frozen=True)
class Run:
    label: str
    rate: float | None  # calls/s across all callers; None: as fast as possible


@dataclass(frozen=True)
class ClientPlan:
    port: int
    refs: Sequence[tuple[str, dict[str, str]]]
    callers: int
    rate: float | None
    seconds: float
    cpu: int | None


@dataclass(frozen=True)
class ClientResult:
    latencies: array.array[float]
    elapsed: float
    errors: int
    cpu_seconds_per_call: float


def _cpu_seconds() -> float:
    """CPU time of this whole process, gRPC's C threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- client process ---------------------------------------------------------------------


async def _client(plan: ClientPlan) -> ClientResult:
    refs, callers, rate, seconds = plan.refs, plan.callers, plan.rate, plan.seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{plan.port}") as channel:
        stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        requests = []
        for name, raw in refs:
            ref = pb2.ScaledObjectRef(name=name, namespace=NAMESPACE, scalerMetadata=raw)
            spec = await stub.GetMetricSpec(ref)
            requests.append(pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricSpecs[0].metricName))
        loop = asyncio.get_running_loop()
        warmup = min(2.0, seconds / 4)
        started = loop.time()
        measure_from, end = started + warmup, started + warmup + seconds
        latencies: array.array[float] = array.array("d")
        errors = 0

        async def caller(index: int) -> None:
            nonlocal errors
            chooser = random.Random(index)
            interval = callers / rate if rate else 0.0
            next_at = started + interval * index / callers
            while True:
                if interval:
                    delay = next_at - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                sent_at = loop.time()
                if sent_at >= end:
                    return
                try:
                    await stub.GetMetrics(requests[chooser.randrange(len(requests))])
                except grpc.aio.AioRpcError:
                    errors += 1
                if sent_at >= measure_from:
                    latencies.append(loop.time() - sent_at)

        cpu_before = _cpu_seconds()
        await asyncio.gather(*(caller(index) for index in range(callers)))
        cpu = _cpu_seconds() - cpu_before
        calls = max(1, len(latencies))
        return ClientResult(
            latencies, elapsed=seconds, errors=errors, cpu_seconds_per_call=cpu * seconds / ((seconds + warmup) * calls)
        )


def _client_process(connection: Connection, plan: ClientPlan) -> None:
    pin_to_cpu(plan.cpu)
    result = asyncio.run(_client(plan))
    connection.send((result.latencies.tobytes(), result.elapsed, result.errors, result.cpu_seconds_per_call))
    connection.close()


# --- server side ------------------------------------------------------------------------


async def measure(
    server_port: int,
    refs: Sequence[tuple[str, dict[str, str]]],
    run: Run,
    args: argparse.Namespace,
    handler_seconds: list[float],
) -> list[str]:
    context = multiprocessing.get_context("spawn")  # never fork a process that runs gRPC
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_client_process,
        args=(sender, ClientPlan(server_port, refs, args.callers, run.rate, args.seconds, args.client_cpu)),
    )
    process.start()
    sender.close()
    handler_seconds.clear()
    cpu_before = _cpu_seconds()
    payload = await asyncio.get_running_loop().run_in_executor(None, receiver.recv)
    server_cpu_per_call = (_cpu_seconds() - cpu_before) / max(1, len(handler_seconds))
    process.join()
    latencies_bytes, elapsed, errors, client_cpu_per_call = payload
    latencies = array.array("d")
    latencies.frombytes(latencies_bytes)
    handler = handler_seconds[-len(latencies) :] if latencies else []
    ms = 1000.0
    return [
        run.label,
        "-" if run.rate is None else f"{run.rate:,.0f}",
        f"{len(latencies) / elapsed:,.0f}",
        f"{percentile(latencies, 0.50) * ms:.2f}",
        f"{percentile(latencies, 0.99) * ms:.2f}",
        f"{max(latencies, default=float('nan')) * ms:.2f}",
        f"{percentile(handler, 0.50) * ms:.3f}",
        f"{percentile(handler, 0.99) * ms:.3f}",
        f"{server_cpu_per_call * 1e6:.0f}",
        f"{client_cpu_per_call * 1e6:.0f}",
        str(errors),
    ]


async def _serve_and_measure(args: argparse.Namespace, runs: Sequence[Run]) -> list[list[str]]:
    engine = FakeEngine()
    refs = ready_targets(engine, args.targets, namespace=NAMESPACE)
    handler_seconds: list[float] = []

    def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
        handler_seconds.append(seconds)  # every call, so server CPU per call counts them all

    server = loopback_grpc_server(engine, args.targets, observe)
    port = await server.start()
    try:
        return [await measure(port, refs, run, args, handler_seconds) for run in runs]
    finally:
        await server.stop(None)


# --- memory -----------------------------------------------------------------------------


def memory_per_target(count: int, history_points: int) -> tuple[float, float]:
    """Bytes per target (everything, and without the history arrays) for `count` targets."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    resolver = TargetResolver(count)
    kept = []
    history_bytes = 0
    for index in range(count):
        raw = metadata(capacityPerReplica=str(5 + index))
        ref = pb2.ScaledObjectRef(name=f"model-{index}", namespace=NAMESPACE, scalerMetadata=raw)
        resolved = resolver.resolve(ref)
        key, spec = key_and_spec(NAMESPACE, f"model-{index}", raw)
        history = tuple(float(value) for value in range(history_points))
        snapshot = target_snapshot(key, spec, plan=decision(), history=history)
        history_bytes += snapshot.history_values.nbytes + snapshot.history_timestamps.nbytes
        kept.append((resolved, snapshot))
        del history
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return total / count, (total - history_bytes) / count


# --- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (after warm-up)")
    parser.add_argument("--rates", type=float, nargs="*", default=[1000.0, 1500.0, 2000.0], help="paced runs, calls/s")
    parser.add_argument("--server-cpu", type=int, default=0, help="-1: not pinned")
    parser.add_argument("--client-cpu", type=int, default=1, help="-1: not pinned")
    parser.add_argument("--memory-targets", type=int, default=200)
    parser.add_argument("--history-points", type=int, default=720, help="history points in each snapshot")
    parser.add_argument("--uvloop", action="store_true", help="run the server's event loop on uvloop")

    args = parser.parse_args(argv)

    pin_to_cpu(args.server_cpu)
    runs = [Run(f"paced {rate:,.0f}/s", rate) for rate in args.rates] + [Run("saturated", None)]
    started = time.perf_counter()
    if args.uvloop:
        import uvloop  # noqa: PLC0415  (optional: only for this comparison)

        rows = uvloop.run(_serve_and_measure(args, runs))
    else:
        rows = asyncio.run(_serve_and_measure(args, runs))
    total_bytes, without_history = memory_per_target(args.memory_targets, args.history_points)

    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    print(
        f"GetMetrics: {args.targets} targets, {args.callers} concurrent callers on one connection, "
        f"server on CPU {args.server_cpu}, client process on CPU {args.client_cpu} "
        f"({os.cpu_count()} CPUs on the host; server pinned to {sorted(cpus)}; "
        f"server loop: {'uvloop' if args.uvloop else 'asyncio'})"
    )
    print(format_table(GET_METRICS_COLUMNS, rows))
    print(
        f"memory per target (spec, resolver entry, snapshot with {args.history_points} history points): "
        f"{total_bytes / 1024:,.1f} KiB, of which {(total_bytes - without_history) / 1024:,.1f} KiB history arrays; "
        f"measured over {args.memory_targets} targets"
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"wall time {time.perf_counter() - started:.1f}s; host load average at the end: {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
