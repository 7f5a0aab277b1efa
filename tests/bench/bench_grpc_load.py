"""GetMetrics under load: p50/p99 latency, calls/s and server CPU per call.

    .venv/bin/python -m tests.bench.bench_grpc_load [--servers builtin grpcio] [--client loadgen|ghz]
        [--targets 1000] [--callers 64] [--rates 1000 2000 3000] [--seconds 15]

The server is the real GrpcServer (the lean HTTP/2 one, "builtin", and/or grpc.aio,
"grpcio") over a fake engine holding READY snapshots for every target. The client sends
GetMetrics round-robin over every target's request, at a fixed rate, from 64 concurrent
callers on one HTTP/2 connection, as KEDA's operator does:

- `loadgen` (default): our Go client, tests/bench/go/loadgen, built by
  tests/bench/build_loadgen.sh and cached beside the harness binaries. Requests are
  serialised once here, so it spends little CPU per call and leaves the 2-core machine
  to the server under test.
- `ghz` (`go install github.com/bojand/ghz/cmd/ghz@v0.120.0`, cached the same way): a
  general tool that renders and encodes each request itself; on 2 cores it takes about
  as much CPU per call as the server, and its latencies include that contention.

The client runs with GOMAXPROCS=1 (`--client-cores`): on this 2-core machine it may use
one core at a time and leaves the other to the server; with both, Go's runtime competes
with the server for the cores and the latency tail measures that contention.

`--servers reference` runs grpc-go (the load generator's `-serve` mode) answering a fixed
GetMetricsResponse: what a compiled, multi-threaded gRPC server reaches on the same
machine, the floor to compare with.

On a VM whose idle vCPUs halt at once (this one boots with guest halt polling off,
`haltpoll.guest_halt_poll_ns=0`), every wake-up of an idle vCPU is a round trip to the
hypervisor, and at moderate rates that, not the server, makes the latency tail; the
reference server shows the same tail. `--keep-cpus-awake` runs a nice-19 busy loop per
CPU during the runs, which yields to any real work but keeps the vCPUs from halting,
to separate the two.

Latencies are measured at the client. "due p99" (loadgen only) counts from when a call
was due, so time spent waiting for a free caller counts too. CPU per call is this
process's CPU time (the server) divided by the calls answered. Memory per target is
`bench_grpc`'s tracemalloc measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoscaler.domain.spec import metric_name_for, parse_spec, target_key
from autoscaler.services.grpc_scaler import ScalerServiceSettings, pb2
from autoscaler.services.grpc_server import IMPLEMENTATIONS, GrpcServer, GrpcServerSettings
from tests.bench.bench_grpc import memory_per_target
from tests.unit.services.fake_engine import FakeEngine, ready_targets

REPO = Path(__file__).parents[2]
GHZ_VERSION = "v0.120.0"
NAMESPACE = "bench"
METHOD = "externalscaler.ExternalScaler.GetMetrics"
REFERENCE = "reference"
MEMORY_TARGETS = 200
HISTORY_POINTS = 720


@dataclass(frozen=True)
class Run:
    achieved: float
    p50: float
    p99: float
    p999: float | None
    due_p99: float | None
    errors: dict[str, int]
    cpu_per_call_us: float


def loadgen_binary() -> str:
    built = subprocess.run(
        ["bash", str(REPO / "tests" / "bench" / "build_loadgen.sh")], check=True, capture_output=True, text=True
    )
    return built.stdout.strip().splitlines()[-1]


def ghz_binary() -> str:
    cache = Path(os.environ.get("PA_CACHE_DIR", Path.home() / ".cache" / "predictive-autoscaler"))
    candidate = cache / "bin" / f"ghz-{GHZ_VERSION}" / "ghz"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ghz")
    if found is None:
        raise SystemExit(
            f"ghz not found; build it: GOBIN={candidate.parent} go install github.com/bojand/ghz/cmd/ghz@{GHZ_VERSION}"
        )
    return found


def requests_for(refs: Sequence[tuple[str, dict[str, str]]]) -> list[pb2.GetMetricsRequest]:
    requests = []
    for name, raw in refs:
        metric = metric_name_for(target_key(NAMESPACE, name, raw), parse_spec(raw))
        ref = pb2.ScaledObjectRef(name=name, namespace=NAMESPACE, scalerMetadata=raw)
        requests.append(pb2.GetMetricsRequest(scaledObjectRef=ref, metricName=metric))
    return requests


def write_requests(requests: Sequence[pb2.GetMetricsRequest], directory: Path, client: str) -> Path:
    if client == "loadgen":
        path = directory / "requests.bin"
        serialised = [request.SerializeToString() for request in requests]
        path.write_bytes(b"".join(struct.pack(">I", len(raw)) + raw for raw in serialised))
        return path
    path = directory / "requests.json"
    as_json = [
        {
            "scaledObjectRef": {
                "name": request.scaledObjectRef.name,
                "namespace": request.scaledObjectRef.namespace,
                "scalerMetadata": dict(request.scaledObjectRef.scalerMetadata),
            },
            "metricName": request.metricName,
        }
        for request in requests
    ]
    path.write_text(json.dumps(as_json))
    return path


@dataclass(frozen=True)
class Client:
    kind: str
    binary: str
    port: int
    data: Path
    callers: int
    cores: int


def client_command(client: Client, rate: int, seconds: float) -> list[str]:
    binary, port, data, callers = client.binary, client.port, client.data, client.callers
    if client.kind == "loadgen":
        return [
            binary, "-addr", f"127.0.0.1:{port}", "-requests", str(data), "-rate", str(rate),
            "-duration", f"{seconds}s", "-concurrency", str(callers),
        ]  # fmt: skip
    return [
        binary, "--insecure", "--proto", str(REPO / "protos" / "externalscaler.proto"), "--call", METHOD,
        "--data-file", str(data), "--concurrency", str(callers), "--connections", "1", "--rps", str(rate),
        "--duration", f"{seconds}s", "--format", "json", f"127.0.0.1:{port}",
    ]  # fmt: skip


def parse_report(client: str, stdout: bytes) -> tuple[int, Run]:
    report = json.loads(stdout)
    if client == "loadgen":
        calls = int(report["calls"])
        run = Run(
            achieved=report["calls_per_second"], p50=report["p50_ms"], p99=report["p99_ms"], p999=report["p999_ms"],
            due_p99=report["scheduled_p99_ms"], cpu_per_call_us=0.0,
            errors={code: count for code, count in report["codes"].items() if code != "OK"},
        )  # fmt: skip
        return calls, run
    latencies = {entry["percentage"]: entry["latency"] / 1e6 for entry in report["latencyDistribution"]}
    codes = report.get("statusCodeDistribution", {})
    run = Run(
        achieved=report["rps"], p50=latencies[50], p99=latencies[99], p999=None, due_p99=None, cpu_per_call_us=0.0,
        errors={code: count for code, count in codes.items() if code != "OK"},
    )  # fmt: skip
    return int(report["count"]), run


async def start_client(client: Client, rate: int, seconds: float) -> asyncio.subprocess.Process:
    """The client offering `rate` calls a second for `seconds`, on `client.cores` cores."""
    return await asyncio.create_subprocess_exec(
        *client_command(client, rate, seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "GOMAXPROCS": str(client.cores)},
    )


async def client_report(client: Client, process: asyncio.subprocess.Process) -> tuple[int, Run]:
    """Calls made and their figures, once the client has finished."""
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{client.kind} failed: {stderr.decode()[-2000:]}")
    return parse_report(client.kind, stdout)


async def offer(client: Client, rate: int, seconds: float, cpu_seconds: Callable[[], float]) -> Run:
    cpu_before = cpu_seconds()
    calls, run = await client_report(client, await start_client(client, rate, seconds))
    cpu = cpu_seconds() - cpu_before
    return Run(**{**run.__dict__, "cpu_per_call_us": cpu / max(1, calls) * 1e6})


async def bench_server(implementation: str, args: argparse.Namespace, binary: str) -> list[tuple[int, Run]]:
    engine = FakeEngine()
    refs = ready_targets(engine, args.targets, namespace=NAMESPACE)
    requests = requests_for(refs)
    if implementation == REFERENCE:
        return await bench_reference(requests, args, binary)
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0, implementation=implementation),  # type: ignore[arg-type]
        service_settings=ScalerServiceSettings(spec_cache_size=max(4096, 2 * args.targets)),
    )
    port = await server.start()
    try:
        return await offer_each_rate(requests, port, args, binary, cpu_seconds=time.process_time)
    finally:
        await server.stop(None)


async def bench_reference(
    requests: Sequence[pb2.GetMetricsRequest], args: argparse.Namespace, binary: str
) -> list[tuple[int, Run]]:
    """grpc-go answering a fixed GetMetricsResponse: the floor any server reaches here."""
    reply = pb2.GetMetricsResponse(
        metricValues=[pb2.MetricValue(metricName=requests[0].metricName, metricValue=3, metricValueFloat=3.0)]
    )
    with tempfile.TemporaryDirectory() as directory:
        reply_file = Path(directory) / "reply.bin"
        reply_file.write_bytes(reply.SerializeToString())
        server = await asyncio.create_subprocess_exec(
            binary, "-serve", str(reply_file), stdout=asyncio.subprocess.PIPE, env={**os.environ, "GOMAXPROCS": "2"}
        )
        assert server.stdout is not None
        port = int((await server.stdout.readline()).decode())
        try:
            return await offer_each_rate(requests, port, args, binary, cpu_seconds=lambda: process_cpu(server.pid))
        finally:
            server.kill()
            await server.wait()


def process_cpu(pid: int) -> float:
    """User plus system CPU seconds of another process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def offer_each_rate(
    requests: Sequence[pb2.GetMetricsRequest],
    port: int,
    args: argparse.Namespace,
    binary: str,
    cpu_seconds: Callable[[], float],
) -> list[tuple[int, Run]]:
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        data = write_requests(requests, Path(directory), args.client)
        client = Client(args.client, binary, port, data, args.callers, args.client_cores)
        await offer(client, 500, 3, cpu_seconds)  # warm-up: caches and connection
        for rate in args.rates:
            rows.append((rate, await offer(client, rate, args.seconds, cpu_seconds)))
    return rows


@contextlib.contextmanager
def cpus_kept_awake(enabled: bool) -> Iterator[None]:
    """One lowest-priority busy loop per CPU, so no CPU ever idles (see the module docstring)."""
    if not enabled:
        yield
        return
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(19))  # noqa: PLW1509
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def print_table(args: argparse.Namespace, results: dict[str, list[tuple[int, Run]]]) -> None:
    print(
        f"GetMetrics, {args.targets} targets, {args.callers} callers on one connection, "
        f"client {args.client} on {args.client_cores} of {os.cpu_count()} cores"
        + (", CPUs kept awake" if args.keep_cpus_awake else "")
    )
    header = ("server", "offered/s", "achieved/s", "p50 ms", "p99 ms", "p99.9 ms", "due p99", "CPU us/call", "errors")
    print(f"{header[0]:<8} " + " ".join(f"{column:>11}" for column in header[1:]))
    for implementation, rows in results.items():
        for rate, run in rows:
            errors = ",".join(f"{code}:{count}" for code, count in sorted(run.errors.items())) or "0"
            optional = [f"{value:>11.2f}" if value is not None else f"{'-':>11}" for value in (run.p999, run.due_p99)]
            print(
                f"{implementation:<8} {rate:>11} {run.achieved:>11.0f} {run.p50:>11.2f} {run.p99:>11.2f} "
                f"{' '.join(optional)} {run.cpu_per_call_us:>11.0f} {errors:>11}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=(*IMPLEMENTATIONS, REFERENCE), default=list(IMPLEMENTATIONS))
    parser.add_argument("--client", choices=("loadgen", "ghz"), default="loadgen")
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 2000, 3000])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--keep-cpus-awake", action="store_true", help="run a nice-19 busy loop per CPU meanwhile")
    parser.add_argument(
        "--client-cores", type=int, default=1, help="GOMAXPROCS of the client: the cores it may use at once"
    )
    args = parser.parse_args()
    binary = loadgen_binary() if args.client == "loadgen" else ghz_binary()

    async def run_all() -> dict[str, list[tuple[int, Run]]]:
        return {implementation: await bench_server(implementation, args, binary) for implementation in args.servers}

    with cpus_kept_awake(args.keep_cpus_awake):
        results = asyncio.run(run_all())
    print_table(args, results)
    total_bytes, without_history = memory_per_target(MEMORY_TARGETS, HISTORY_POINTS)
    print(
        f"memory per target (spec, resolver entry, snapshot with {HISTORY_POINTS} history points): "
        f"{total_bytes / 1024:,.1f} KiB, of which {(total_bytes - without_history) / 1024:,.1f} KiB history arrays"
    )


if __name__ == "__main__":
    main()
