"""GetMetrics under load: p50/p99 latency, calls/s and server CPU per call.

    .venv/bin/python -m tests.bench.bench_grpc_load [--servers grpcio grpcio-sync reference] [--client loadgen|ghz]
        [--engine fake|real] [--targets 1000] [--callers 64] [--rates 1000 2000 3000] [--seconds 15]
        [--speed 1] [--step 60s] [--history 6h] [--model auto] [--settle-seconds 600 | --during-warm-start SHARE]
        [--fit-niceness N] [--full-collection-seconds 120] [--young-threshold 700] [--watch-stalls]
        [--traces DIR]

The server is the real GrpcServer (grpc.aio, "grpcio") with its default settings. Behind
it, `--engine fake` (the default) holds READY snapshots for every target and does no
other work; `--engine real` is the real `Engine` keeping every target fresh: each
replays one of the traces in `--traces DIR` through `ReplaySource` on a clock running
`--speed` times faster than the wall (as tests/bench/soak.py does), collecting,
refitting in a fit worker process (`--model`) and planning while the calls arrive, with
the daemon's garbage-collection pacing (`--full-collection-seconds`, 0 leaves collections
to CPython; `--young-threshold`, CPython's generation-0 threshold between them, 0 for
none). The run starts once every target has its first plan (a warm start replays each
target's history window in the fit worker) and, waiting at most `--settle-seconds`, a
fitted model; `--during-warm-start SHARE` starts it once that share of the targets has
its first plan instead, calls only those while the fit worker replays the rest, and
fails if the replays were all done before the calls were. The fit worker runs at the lowest CPU
priority, as the daemon's do, or `--fit-niceness N` nicer than this process. The client
sends GetMetrics round-robin over every target's request, at a fixed rate, from 64
concurrent callers on one HTTP/2 connection, as KEDA's operator does:

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

`--servers grpcio-sync` runs the same service on grpcio's synchronous server instead, with
a pool of `--sync-workers` threads: what choosing the sync server would give (bench only,
and only over the fake engine, whose READY targets never make a call wait).

`--servers reference` runs grpc-go (the load generator's `-serve` mode) answering a fixed
GetMetricsResponse: what a compiled, multi-threaded gRPC server reaches on the same
machine, the floor to compare with.

On a VM whose idle vCPUs halt at once (this one boots with guest halt polling off,
`haltpoll.guest_halt_poll_ns=0`), every wake-up of an idle vCPU is a round trip to the
hypervisor, and at moderate rates that, not the server, makes the latency tail; the
reference server shows the same tail. `--keep-cpus-awake` runs a nice-19 busy loop per
CPU during the runs, which yields to any real work but keeps the vCPUs from halting,
to separate the two.

Before each rate the machine's load average is printed: other processes compete for the
same cores. After each rate, with the real engine: the share of targets fresh and fitted,
the garbage collector's pauses on the event loop during the rate, and with
`--watch-stalls` the event-loop stalls over 20 ms and the stack each was charged to
(tests/bench/stall_watch.py; its watcher thread takes the GIL every 5 ms).

Latencies are measured at the client. "due p99" (loadgen only) counts from when a call
was due, so time spent waiting for a free caller counts too. CPU per call is this
process's CPU time (the server) divided by the calls answered; with the real engine, the
CPU the engine spent in an equally long window without calls just before is subtracted
first, so the figure is what the calls cost. Memory per target is `bench_grpc`'s
tracemalloc measure.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc

from autoscaler.adapters.clock import ScaledClock
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_duration, parse_spec, target_key
from autoscaler.domain.types import TargetKey
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.engine.fit_pool import FitPool
from autoscaler.gc_pacing import YOUNG_THRESHOLD, PacedCollector
from autoscaler.services.grpc_scaler import SERVICE_NAME, ExternalScalerService, ScalerServiceSettings, pb2
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings, channel_options
from autoscaler.settings import EngineTuning
from tests.bench.bench_grpc import memory_per_target
from tests.bench.stall_watch import StallWatch
from tests.traces import add_traces_option
from tests.unit.services.fake_engine import FakeEngine, ready_targets

REPO = Path(__file__).parents[2]
GHZ_VERSION = "v0.120.0"
NAMESPACE = "bench"
NAMESPACE_SOAK = "soak"
"""The namespace tests/bench/soak.py's targets are built in."""
METHOD = "externalscaler.ExternalScaler.GetMetrics"
SERVER = "grpcio"
SYNC_SERVER = "grpcio-sync"
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


async def offer(
    client: Client, rate: int, seconds: float, cpu_seconds: Callable[[], float], idle_cpu: float = 0.0
) -> Run:
    """`idle_cpu`: CPU seconds per wall second spent without calls, subtracted from the calls' CPU."""
    cpu_before, wall_before = cpu_seconds(), time.monotonic()
    calls, run = await client_report(client, await start_client(client, rate, seconds))
    cpu = cpu_seconds() - cpu_before - idle_cpu * (time.monotonic() - wall_before)
    return Run(**{**run.__dict__, "cpu_per_call_us": cpu / max(1, calls) * 1e6})


async def bench_server(server_kind: str, args: argparse.Namespace, binary: str) -> list[tuple[int, Run]]:
    if args.engine == "real" and server_kind == SERVER:
        return await bench_real_engine(args, binary)
    engine = FakeEngine()
    refs = ready_targets(engine, args.targets, namespace=NAMESPACE)
    requests = requests_for(refs)
    if server_kind == REFERENCE:
        return await bench_reference(requests, args, binary)
    if server_kind == SYNC_SERVER:
        return await bench_sync_server(engine, requests, args, binary)
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        service_settings=ScalerServiceSettings(spec_cache_size=max(4096, 2 * args.targets)),
    )
    port = await server.start()
    try:
        return await offer_each_rate(requests, port, args, binary, cpu_seconds=time.process_time)
    finally:
        await server.stop(None)


async def bench_sync_server(
    engine: FakeEngine, requests: Sequence[pb2.GetMetricsRequest], args: argparse.Namespace, binary: str
) -> list[tuple[int, Run]]:
    """The service's GetMetrics on grpcio's thread-pool server: the alternative to grpc.aio."""
    service = ExternalScalerService(engine, settings=ScalerServiceSettings(spec_cache_size=max(4096, 2 * args.targets)))

    def get_metrics(request: pb2.GetMetricsRequest, _context: grpc.ServicerContext) -> pb2.GetMetricsResponse:
        answer = service.get_metrics(request)
        if not isinstance(answer, pb2.GetMetricsResponse):  # only a warming target waits; none is here
            raise RuntimeError("a benchmark target is not READY")
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        get_metrics,
        request_deserializer=pb2.GetMetricsRequest.FromString,
        response_serializer=pb2.GetMetricsResponse.SerializeToString,
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=args.sync_workers),
        handlers=[grpc.method_handlers_generic_handler(SERVICE_NAME, {"GetMetrics": handler})],
        options=channel_options(GrpcServerSettings()),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        return await offer_each_rate(requests, port, args, binary, cpu_seconds=time.process_time)
    finally:
        server.stop(None)


async def bench_real_engine(args: argparse.Namespace, binary: str) -> list[tuple[int, Run]]:
    """The real engine keeping `args.targets` replayed targets fresh behind the server."""
    # soak imports this module's client helpers, so its helpers are imported here.
    from tests.bench.soak import GcPauses, build_targets, metrics_requests  # noqa: PLC0415

    step, history = parse_duration(args.step), parse_duration(args.history)
    start = float(int(time.time() / step) * step)
    targets, source = build_targets(args.targets, step, history, args.model, start, traces=args.traces)
    clock = ScaledClock(start=start, speed=args.speed)
    executor = FitPool(max_workers=1, niceness=args.fit_niceness)
    engine = Engine(
        sources={"default": source},
        clock=clock,
        fit_executor=executor,
        settings=EngineSettings(max_targets=args.targets + 1, idle_target_ttl_seconds=10 * 86400.0),
    )
    for target in targets:
        engine.ensure_target(target_key(NAMESPACE_SOAK, target.name, target.metadata), parse_spec(target.metadata))
    await engine.start()
    server = GrpcServer(engine, GrpcServerSettings(host="127.0.0.1", port=0), clock=clock.now)
    port = await server.start()
    collector = None
    if args.full_collection_seconds:
        collector = PacedCollector(args.full_collection_seconds, young_threshold=args.young_threshold or None)
        collector.start()  # last, as the daemon does
    pauses, watch = GcPauses(), StallWatch() if args.watch_stalls else None
    if watch is not None:
        watch.start()

    def report() -> str:
        """What the engine and the event loop did since the last report."""
        collections = pauses.take()
        line = (
            f"{fresh_share(engine, clock.now(), step):.1%} of targets fresh, {fitted_share(engine):.1%} fitted; "
            f"GC pauses: longest {max(collections.longest_full_ms, collections.longest_young_ms):.1f} ms, "
            f"{collections.young_total_ms:.0f} ms in {collections.young_collections} young ones, "
            f"{collections.full_collections} full"
        )
        if watch is None:
            return line
        stalls = watch.take()
        worst = "".join(f"\n    {ms:7.0f} ms in {stack}" for stack, ms in stalls.worst())
        return f"{line}; loop stalls over 20 ms: {stalls.stalls}, longest {stalls.longest_ms:.0f} ms{worst}"

    try:
        warmed = time.monotonic()
        ready_share = args.during_warm_start or 1.0
        while planned_share(engine) < ready_share:
            await asyncio.sleep(1.0)
        keys = planned_keys(engine)
        planned = [target for target in targets if target_key(NAMESPACE_SOAK, target.name, target.metadata) in keys]
        print(f"{len(planned)} of {args.targets} targets planned after {time.monotonic() - warmed:.0f} s", flush=True)
        # A replay fits where the window allows; a target whose history is still too short
        # plans without a model, and by default the calls wait for its first fit.
        settle_until = time.monotonic() + (0.0 if args.during_warm_start else args.settle_seconds)
        while fitted_share(engine) < 1.0 and time.monotonic() < settle_until:
            await asyncio.sleep(5.0)
        print(f"{fitted_share(engine):.1%} of targets fitted after {time.monotonic() - warmed:.0f} s", flush=True)
        engine_cpu = await engine_only_cpu(args.seconds)
        rows = await offer_each_rate(
            metrics_requests(planned), port, args, binary, cpu_seconds=time.process_time, idle_cpu=engine_cpu,
            report=report,
        )  # fmt: skip
        if args.during_warm_start and planned_share(engine) >= 1.0:
            raise SystemExit("--during-warm-start: the replays were all done before the calls; use more targets")
        return rows
    finally:
        if watch is not None:
            watch.stop()
        pauses.close()
        if collector is not None:
            await collector.stop()
        await server.stop(1)
        await engine.stop()
        executor.shutdown(wait=False, cancel_futures=True)


async def engine_only_cpu(seconds: float) -> float:
    """CPU seconds per wall second this process spends with no calls arriving: the engine's."""
    before_cpu, before_wall = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    return (time.process_time() - before_cpu) / (time.monotonic() - before_wall)


def planned_share(engine: Engine) -> float:
    """The share of targets with a first plan: those past their warm start."""
    return len(planned_keys(engine)) / max(1, len(engine.snapshot().targets))


def planned_keys(engine: Engine) -> set[TargetKey]:
    return {key for key, target in engine.snapshot().targets.items() if target.decision is not None}


def fitted_share(engine: Engine) -> float:
    """The share of targets with a fitted model (not just the cold-start plan)."""
    targets = list(engine.snapshot().targets.values())
    return sum(t.chosen_model is not None for t in targets) / max(1, len(targets))


def fresh_share(engine: Engine, now: float, step: float) -> float:
    """The share of targets READY with a sample younger than two steps: what KEDA gets answered from."""
    targets = list(engine.snapshot().targets.values())
    fresh = sum(
        t.status is TargetStatus.READY and t.last_sample_at is not None and now - t.last_sample_at <= 2 * step
        for t in targets
    )
    return fresh / max(1, len(targets))


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
    *,
    cpu_seconds: Callable[[], float],
    idle_cpu: float = 0.0,
    report: Callable[[], str] | None = None,
) -> list[tuple[int, Run]]:
    """`report`: what happened since its last call, printed before the first rate and after each."""
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        data = write_requests(requests, Path(directory), args.client)
        client = Client(args.client, binary, port, data, args.callers, args.client_cores)
        await offer(client, 500, 3, cpu_seconds, idle_cpu)  # warm-up: caches and connection
        if report is not None:
            print(f"before the calls: {report()}", flush=True)
        for rate in args.rates:
            load = " ".join(f"{average:.2f}" for average in os.getloadavg())
            print(f"{rate} calls/s: load average {load} before", flush=True)
            rows.append((rate, await offer(client, rate, args.seconds, cpu_seconds, idle_cpu)))
            if report is not None:
                print(f"after {rate} calls/s: {report()}", flush=True)
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


def gc_pacing(args: argparse.Namespace) -> str:
    if not args.full_collection_seconds:
        return "CPython"
    young = f", young at {args.young_threshold}" if args.young_threshold else ", no young ones"
    return f"paced every {args.full_collection_seconds:g}s{young}"


def print_table(args: argparse.Namespace, results: dict[str, list[tuple[int, Run]]]) -> None:
    engine = (
        f"real engine ({args.model}, step {args.step}, {args.speed:g}x, "
        f"fit worker {'SCHED_IDLE' if args.fit_niceness is None else f'nice +{args.fit_niceness}'}, "
        f"GC {gc_pacing(args)}" + (", during the warm start)" if args.during_warm_start else ")")
        if args.engine == "real"
        else "fake engine"
    )
    print(
        f"GetMetrics, {args.targets} targets, {engine}, {args.callers} callers on one connection, "
        f"client {args.client} on {args.client_cores} of {os.cpu_count()} cores"
        + (", CPUs kept awake" if args.keep_cpus_awake else "")
    )
    header = ("server", "offered/s", "achieved/s", "p50 ms", "p99 ms", "p99.9 ms", "due p99", "CPU us/call", "errors")
    print(f"{header[0]:<9} " + " ".join(f"{column:>11}" for column in header[1:]))
    for server_kind, rows in results.items():
        for rate, run in rows:
            errors = ",".join(f"{code}:{count}" for code, count in sorted(run.errors.items())) or "0"
            optional = [f"{value:>11.2f}" if value is not None else f"{'-':>11}" for value in (run.p999, run.due_p99)]
            print(
                f"{server_kind:<9} {rate:>11} {run.achieved:>11.0f} {run.p50:>11.2f} {run.p99:>11.2f} "
                f"{' '.join(optional)} {run.cpu_per_call_us:>11.0f} {errors:>11}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", nargs="+", choices=(SERVER, SYNC_SERVER, REFERENCE), default=[SERVER])
    parser.add_argument("--sync-workers", type=int, default=8, help="grpcio-sync: the handler pool's threads")
    parser.add_argument("--engine", choices=("fake", "real"), default="fake")
    parser.add_argument("--speed", type=float, default=1.0, help="real engine: virtual seconds per wall second")
    parser.add_argument("--step", default="60s", help="real engine: each target's step")
    parser.add_argument("--history", default="6h", help="real engine: each target's history window")
    parser.add_argument("--model", default="auto", help="real engine: each target's model")
    when_to_call = parser.add_mutually_exclusive_group()
    when_to_call.add_argument(
        "--settle-seconds", type=float, default=600.0, help="real engine: longest wait for the first fits before calls"
    )
    when_to_call.add_argument(
        "--during-warm-start",
        type=float,
        metavar="SHARE",
        help="real engine: call the targets planned once this share has its first plan, while the rest replay",
    )
    parser.add_argument(
        "--fit-niceness", type=int, default=None, help="real engine: the fit worker's niceness; default SCHED_IDLE"
    )
    parser.add_argument(
        "--full-collection-seconds",
        type=float,
        default=EngineTuning().full_collection_seconds,
        help="real engine: period of the paced garbage collections; 0 leaves them to CPython",
    )
    parser.add_argument(
        "--young-threshold",
        type=int,
        default=YOUNG_THRESHOLD,
        help="real engine: CPython's generation-0 threshold between them; 0: no young collections",
    )
    parser.add_argument("--watch-stalls", action="store_true", help="real engine: report event-loop stalls")
    add_traces_option(parser)
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
        return {server_kind: await bench_server(server_kind, args, binary) for server_kind in args.servers}

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
