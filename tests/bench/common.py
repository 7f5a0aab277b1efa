"""Pieces the gRPC benchmarks share: the server under test, CPU pinning and the result table."""

from __future__ import annotations

import os
from collections.abc import Sequence

from autoscaler.services.grpc_scaler import ScalerServiceSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.rpc import RequestObserver
from tests.unit.services.fake_engine import FakeEngine

# The columns of one GetMetrics run, as `bench_grpc.measure` returns them.
GET_METRICS_COLUMNS = (
    "run",
    "rate asked",
    "calls/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "handler p50 ms",
    "handler p99 ms",
    "server CPU us/call",
    "client CPU us/call",
    "errors",
)


def pin_to_cpu(cpu: int | None) -> None:
    """Pin this process to one CPU; a negative number leaves it to the scheduler."""
    if cpu is not None and cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    lines = [" | ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def loopback_grpc_server(engine: FakeEngine, targets: int, observer: RequestObserver) -> GrpcServer:
    """The daemon's gRPC server on a loopback port, its spec cache large enough for every target."""
    return GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        service_settings=ScalerServiceSettings(spec_cache_size=max(4096, 2 * targets)),
        observer=observer,
    )
