"""Soak: many targets on the real engine over an accelerated day of replayed traces.

    nice -n 10 .venv/bin/python -m tests.bench.soak [--targets 5000] [--virtual-hours 24]
        [--speed 120] [--step 60s] [--history 6h] [--model auto] [--fit-workers 1]
        [--executor process|thread] [--full-collection-seconds 120] [--traces DIR]

Every target replays one of the real traces in `--traces DIR` (default: the repository's
copies in tests/data/traces) from its own offset, through `ReplaySource` on a `ScaledClock`
running `--speed` times faster than the wall. The real `Engine` collects, refits (in a
process pool by default) and plans; the real `GrpcServer` answers GetMetrics, which the
benchmarks' load generator (tests/bench/go/loadgen, in its own process on one core) calls
round-robin over every target throughout, at `--call-rate`, the way KEDA polls.

Printed once per virtual hour, then summarised:

- RSS of this process and of the fit workers, and the growth per virtual hour after the
  first hour (the warm start fills every history buffer, so growth after it is a leak);
- freshness: per target, the age of its newest sample on the engine's clock (p50, p99,
  max) and the share of targets whose answer KEDA would get (servable); a target is
  fresh while its newest sample is younger than two steps;
- the share of targets with a fitted model;
- GetMetrics latency (p50, p99, wall milliseconds) and the share of calls that failed;
- garbage collections on the daemon's thread: full ones (count, longest pause, objects
  freed) and young ones (longest pause, total seconds), and the objects they track;
- event-loop stalls over 20 ms (`tests/bench/stall_watch.py`): how many, the longest,
  and the stacks they were charged to;
- whether the loop thread had a CPU (`tests/bench/thread_cpu.py`): the share of a core
  it ran, the milliseconds a wall second it waited on a run queue, and the machine's
  VM steal.

The daemon's garbage-collection pacing (`autoscaler/gc_pacing.py`) and fit concurrency
apply, as in `autoscaler serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler.adapters.clock import ScaledClock
from autoscaler.adapters.replay import ReplaySource, ReplayTrace
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.spec import metric_name_for, parse_duration, parse_spec, target_key
from autoscaler.engine.engine import Engine, EngineSettings
from autoscaler.engine.fit_pool import FitPool
from autoscaler.gc_pacing import PacedCollector
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.settings import EngineTuning
from autoscaler.sim.trace import parse_trace
from tests.bench.bench_grpc_load import Client, client_report, loadgen_binary, start_client, write_requests
from tests.bench.stall_watch import StallReport, StallWatch
from tests.bench.thread_cpu import ThreadCpu, ThreadCpuMeter
from tests.traces import add_traces_option

NAMESPACE = "soak"
P99_TARGET_MS = 5.0
"""The service's GetMetrics p99 target (docs/grpc.md), which must hold under the soak too."""


@dataclass(frozen=True)
class Target:
    name: str
    metadata: dict[str, str]
    metric_name: str


@dataclass
class HourStats:
    virtual_hour: int
    rss_mib: float
    worker_rss_mib: float
    age_p50: float
    age_p99: float
    age_max: float
    fresh_share: float
    servable_share: float
    fitted_share: float
    calls: int
    failures: int
    failures_by_code: dict[str, int]
    p50_ms: float
    p99_ms: float
    collections: GcTally
    tracked_objects: int
    stalls: StallReport
    loop_cpu: ThreadCpu


@dataclass
class GcTally:
    full_collections: int = 0
    longest_full_ms: float = 0.0
    full_collected: int = 0
    young_collections: int = 0
    longest_young_ms: float = 0.0
    young_total_ms: float = 0.0
    longest_young: str = ""


class GcPauses:
    """The garbage collector's pauses on the daemon's thread, per virtual hour: a
    collection stops the event loop, and so every GetMetrics waiting on it."""

    def __init__(self) -> None:
        self._started = 0.0
        self._tally = GcTally()
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused_ms = (time.perf_counter() - self._started) * 1000.0
        tally = self._tally
        if info["generation"] == 2:
            tally.full_collections += 1
            tally.full_collected += info["collected"]
            tally.longest_full_ms = max(tally.longest_full_ms, paused_ms)
        else:
            tally.young_collections += 1
            if paused_ms > tally.longest_young_ms:
                tally.longest_young_ms = paused_ms
                tally.longest_young = f"gen {info['generation']}, {info['collected']} collected"
            tally.young_total_ms += paused_ms

    def take(self) -> GcTally:
        taken, self._tally = self._tally, GcTally()
        return taken

    def close(self) -> None:
        gc.callbacks.remove(self._observe)


@dataclass(frozen=True)
class CallStats:
    calls: int = 0
    failures: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    failures_by_code: dict[str, int] = field(default_factory=dict)


def load_trace_values(directory: Path) -> list[np.ndarray]:
    """Every trace in `directory`, scaled to a common range."""
    values = []
    for path in sorted(directory.glob("*.csv")):
        with path.open() as handle:
            trace = parse_trace(handle, allow_negative=True)
        series = np.clip(trace.values, 0.0, None)
        peak = float(series.max()) or 1.0
        values.append(series / peak * 100.0)
    return values


def build_targets(
    count: int, step_seconds: float, history_seconds: float, model: str, start: float, *, traces: Path
) -> tuple[list[Target], ReplaySource]:
    rng = random.Random(7)
    bases = load_trace_values(traces)
    history_rows = int(history_seconds / step_seconds)
    replays, targets = [], []
    for index in range(count):
        values = bases[index % len(bases)]
        name = f"model-{index}"
        replays.append(
            ReplayTrace(
                name=name,
                values=values,
                step_seconds=step_seconds,
                origin=start,
                offset_rows=history_rows + rng.randrange(len(values)),
            )
        )
        metadata = {
            "query": f"replay:{name}",
            "capacityPerReplica": str(5 + index % 20),
            "step": f"{step_seconds:g}s",
            "leadTime": f"{2 * step_seconds:g}s",
            "historyWindow": f"{history_seconds:g}s",
            "model": model,
            "maxReplicas": "500",
        }
        key = target_key(NAMESPACE, name, metadata)
        targets.append(Target(name, metadata, metric_name_for(key, parse_spec(metadata))))
    return targets, ReplaySource(replays)


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def worker_pids(executor: Executor) -> list[int]:
    if isinstance(executor, ProcessPoolExecutor):
        return list(getattr(executor, "_processes", {}) or {})
    return []


def metrics_requests(targets: Sequence[Target]) -> list[pb2.GetMetricsRequest]:
    return [
        pb2.GetMetricsRequest(
            scaledObjectRef=pb2.ScaledObjectRef(name=target.name, namespace=NAMESPACE, scalerMetadata=target.metadata),
            metricName=target.metric_name,
        )
        for target in targets
    ]


async def finish_calls(client: Client, process: asyncio.subprocess.Process) -> CallStats:
    calls, run = await client_report(client, process)
    return CallStats(calls, sum(run.errors.values()), run.p50, run.p99, dict(run.errors))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def hour_stats(
    engine: Engine,
    clock: ScaledClock,
    *,
    hour: int,
    executor: Executor,
    calls: CallStats,
    step: float,
    pauses: GcPauses,
    stalls: StallReport,
    loop_cpu: ThreadCpu,
) -> HourStats:
    now = clock.now()
    targets = list(engine.snapshot().targets.values())
    # A target without any sample yet counts as not fresh; the percentiles cover the others.
    ages = [now - t.last_sample_at for t in targets if t.last_sample_at is not None]
    total = max(1, len(targets))
    return HourStats(
        virtual_hour=hour,
        rss_mib=rss_mib(os.getpid()),
        worker_rss_mib=sum(rss_mib(pid) for pid in worker_pids(executor)),
        age_p50=percentile(ages, 50),
        age_p99=percentile(ages, 99),
        age_max=max(ages, default=float("nan")),
        fresh_share=sum(age <= 2 * step for age in ages) / total,
        servable_share=sum(t.status is TargetStatus.READY and t.decision is not None for t in targets) / total,
        fitted_share=sum(t.chosen_model is not None for t in targets) / total,
        calls=calls.calls,
        failures=calls.failures,
        failures_by_code=calls.failures_by_code,
        p50_ms=calls.p50_ms,
        p99_ms=calls.p99_ms,
        collections=pauses.take(),
        tracked_objects=len(gc.get_objects()),
        stalls=stalls,
        loop_cpu=loop_cpu,
    )


def print_row(stats: HourStats) -> None:
    print(
        f"{stats.virtual_hour:>4} {stats.rss_mib:>8.0f} {stats.worker_rss_mib:>8.0f} "
        f"{stats.age_p50:>7.0f} {stats.age_p99:>7.0f} {stats.age_max:>7.0f} "
        f"{stats.fresh_share:>6.1%} {stats.servable_share:>6.1%} {stats.fitted_share:>6.1%} "
        f"{stats.calls:>6} {stats.failures:>5} {stats.p50_ms:>7.2f} {stats.p99_ms:>7.2f} "
        f"{stats.collections.full_collections:>4} {stats.collections.longest_full_ms:>7.1f} "
        f"{stats.collections.longest_young_ms:>7.1f} {stats.collections.young_total_ms / 1000:>7.2f} "
        f"{stats.tracked_objects / 1e6:>7.2f} "
        f"{stats.stalls.stalls:>6} {stats.stalls.longest_ms:>8.1f} "
        f"{stats.loop_cpu.cpu_share:>5.0%} {stats.loop_cpu.run_queue_ms_per_second:>6.1f} "
        f"{stats.loop_cpu.steal_share:>6.2%}",
        flush=True,
    )
    if stats.failures_by_code:
        print(f"        failed calls by status: {stats.failures_by_code}", flush=True)
    if stats.collections.full_collections:
        print(f"        full collections freed {stats.collections.full_collected} objects", flush=True)
    if stats.collections.longest_young:
        print(f"        longest young collection: {stats.collections.longest_young}", flush=True)
    for stack, milliseconds in stats.stalls.worst():
        print(f"        stalled {milliseconds:8.0f} ms in {stack}", flush=True)


def print_summary(rows: Sequence[HourStats], arguments: argparse.Namespace, wall_seconds: float) -> None:
    steady = [row for row in rows if row.virtual_hour >= 1]
    if len(steady) >= 2:
        hours = [row.virtual_hour for row in steady]
        growth = float(np.polyfit(hours, [row.rss_mib for row in steady], 1)[0])
        worker_growth = float(np.polyfit(hours, [row.worker_rss_mib for row in steady], 1)[0])
    else:
        growth = worker_growth = float("nan")
    nan = float("nan")
    p99s = [row.p99_ms for row in rows if row.calls]
    worst_age = max((row.age_p99 for row in steady), default=nan)
    lowest_fresh = min((row.fresh_share for row in steady), default=nan)
    lowest_servable = min((row.servable_share for row in steady), default=nan)
    median_p50 = statistics.median([row.p50_ms for row in rows if row.calls] or [nan])
    print()
    print(
        f"targets {arguments.targets}, virtual hours {len(rows) - 1}, speed {arguments.speed:g}x, "
        f"step {arguments.step}, history {arguments.history}, model {arguments.model}, "
        f"fit workers {arguments.fit_workers} ({arguments.executor}), "
        f"full collections every {arguments.full_collection_seconds:g}s, wall {wall_seconds:.0f}s"
    )
    print(f"RSS growth after hour 1: {growth:+.2f} MiB/virtual hour (daemon), {worker_growth:+.2f} (fit workers)")
    print(
        f"worst hourly p99 of sample age: {worst_age:.0f}s (step {parse_duration(arguments.step):g}s); "
        f"lowest fresh share {lowest_fresh:.1%}; lowest servable share {lowest_servable:.1%}"
    )
    print(
        f"GetMetrics: worst hourly p99 {max(p99s, default=nan):.2f} ms (target {P99_TARGET_MS:g} ms), "
        f"median of hourly p50 {median_p50:.2f} ms, "
        f"calls {sum(row.calls for row in rows)}, failures {sum(row.failures for row in rows)}"
    )


def make_executor(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fit")
    return FitPool(max_workers=workers)  # the daemon's pool


async def soak(arguments: argparse.Namespace) -> list[HourStats]:
    step = parse_duration(arguments.step)
    history = parse_duration(arguments.history)
    start = float(int(time.time() / step) * step)
    targets, source = build_targets(arguments.targets, step, history, arguments.model, start, traces=arguments.traces)
    clock = ScaledClock(start=start, speed=arguments.speed)
    executor = make_executor(arguments.executor, arguments.fit_workers)
    engine = Engine(
        sources={"default": source},
        clock=clock,
        fit_executor=executor,
        settings=EngineSettings(
            tick_seconds=1.0,
            max_targets=arguments.targets + 1,
            idle_target_ttl_seconds=10 * 86400.0,
            concurrent_fits=arguments.fit_workers + 1,  # as the daemon sets it
        ),
    )
    for target in targets:
        engine.ensure_target(target_key(NAMESPACE, target.name, target.metadata), parse_spec(target.metadata))
    await engine.start()
    server = GrpcServer(engine, GrpcServerSettings(host="127.0.0.1", port=0), clock=clock.now)
    port = await server.start()
    collector = PacedCollector(arguments.full_collection_seconds) if arguments.full_collection_seconds else None
    if collector is not None:
        collector.start()  # as the daemon does once it is up
    print(
        " hour  rss_MiB work_MiB  age_p50 age_p99 age_max  fresh  serve fitted  calls  fail  p50_ms  p99_ms"
        "  gc2 gc2_ms young_ms young_s  objs_M stalls stall_ms  loop runq_ms  steal"
    )
    rows: list[HourStats] = []
    # SIGTERM or SIGINT ends the run early with the summary of the hours so far.
    interrupted = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, interrupted.set)
    calls: asyncio.subprocess.Process | None = None
    pauses = GcPauses()
    watch = StallWatch()
    watch.start()
    loop_cpu = ThreadCpuMeter()
    with tempfile.TemporaryDirectory() as directory:
        # GetMetrics round-robin over every target from another process on one core, as
        # KEDA's operator would be on its own node.
        requests = write_requests(metrics_requests(targets), Path(directory), "loadgen")
        client = Client("loadgen", loadgen_binary(), port, requests, callers=64, cores=1)
        try:
            for hour in range(arguments.virtual_hours + 1):
                wait = (start + hour * 3600.0 - clock.now()) / clock.speed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupted.wait(), max(0.0, wait))
                if interrupted.is_set():
                    break
                hour_calls = CallStats() if calls is None else await finish_calls(client, calls)
                rows.append(
                    hour_stats(
                        engine,
                        clock,
                        hour=hour,
                        executor=executor,
                        calls=hour_calls,
                        step=step,
                        pauses=pauses,
                        stalls=watch.take(),
                        loop_cpu=loop_cpu.take(),
                    )
                )
                print_row(rows[-1])
                if hour < arguments.virtual_hours:
                    # Ends a little before the hour does, so its figures are in by then.
                    calls = await start_client(client, arguments.call_rate, 0.95 * 3600.0 / clock.speed)
        finally:
            if calls is not None and calls.returncode is None:
                calls.kill()
                await calls.wait()
            await server.stop(1)
            await engine.stop()
            if collector is not None:
                await collector.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            pauses.close()
            watch.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--virtual-hours", type=int, default=24)
    parser.add_argument("--speed", type=float, default=120.0, help="virtual seconds per wall second")
    parser.add_argument("--step", default="60s")
    parser.add_argument("--history", default="6h")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--fit-workers", type=int, default=1)
    parser.add_argument("--executor", choices=("process", "thread"), default="process")
    parser.add_argument(
        "--call-rate", type=int, default=350, help="GetMetrics per wall second (KEDA: targets / 15 s HPA period)"
    )
    parser.add_argument(
        "--full-collection-seconds",
        type=float,
        default=EngineTuning().full_collection_seconds,
        help="wall seconds between full collections, as engine.fullCollectionSeconds; 0: CPython decides",
    )
    add_traces_option(parser)
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    rows = asyncio.run(soak(arguments))
    print_summary(rows, arguments, time.monotonic() - started)


if __name__ == "__main__":
    main()
