"""Where a target's memory grows: its pipeline alone, traced with tracemalloc.

    .venv/bin/python -m tests.bench.pipeline_memory [--targets 100] [--virtual-hours 24]
        [--model auto] [--step 60s] [--history 6h] [--top 5] [--traces DIR]

The soak measures RSS, which cannot say what grows. This runs the soak's targets
(`tests.bench.soak.build_targets`: the real traces in `--traces DIR`, each from its own offset)
through the code the engine runs each step, in one process and with no event loop:
`TargetRuntime.observe`, a refit when due (in-process), `TargetPipeline.decide` and the
published view (`build_target_snapshot`). The history window is filled and the first
model fitted before tracing starts, so the first traced hour already has every buffer
full.

Printed once per virtual hour: the traced memory (after a full collection) and its
growth per target since the last hour. Then the allocation sites that grew most between
the middle and the last hour, with their stacks. Growth that stops is a cache filling;
growth that follows the hours is a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections.abc import Sequence

from autoscaler.adapters.replay import ReplaySource
from autoscaler.domain.spec import parse_duration, parse_spec, target_key
from autoscaler.engine.collection import read_range, read_step
from autoscaler.engine.engine import EngineSettings
from autoscaler.engine.runtime import TargetRuntime, build_target_snapshot
from autoscaler.planner.pipeline import fit_for
from tests.bench.soak import NAMESPACE, Target, build_targets
from tests.traces import add_traces_option

STACK_DEPTH = 8


async def warm_runtimes(
    targets: Sequence[Target], source: ReplaySource, *, start: float, step: float, history: float
) -> list[TargetRuntime]:
    """One runtime per target with its history window filled and its first model fitted,
    as after a warm start."""
    runtimes = []
    for target in targets:
        spec = parse_spec(target.metadata)
        key = target_key(NAMESPACE, target.name, target.metadata)
        runtime = TargetRuntime.create(key=key, spec=spec, metric_name=target.metric_name)
        for signals in await read_range(source, spec, start=start - history + step, end=start):
            runtime.observe(signals)
        runtime.pipeline.install(fit_for(runtime.pipeline.refit_inputs()))
        runtimes.append(runtime)
    return runtimes


async def run_step(runtime: TargetRuntime, source: ReplaySource, now: float) -> None:
    """What the engine does for one target at one step, refit included."""
    reading = await read_step(source, runtime.spec, runtime.key, replicas=None, at=now)
    if not reading.missing:
        runtime.observe(reading.signals)
    pipeline = runtime.pipeline
    pipeline.refit_if_due()
    runtime.decision = pipeline.decide(now, observed_replicas=reading.signals.replicas)
    shown = EngineSettings().history_points_shown
    runtime.view = build_target_snapshot(runtime, now=now, reuse=None, shown=shown)


async def trace_memory(arguments: argparse.Namespace) -> None:
    step = parse_duration(arguments.step)
    history = parse_duration(arguments.history)
    start = float(int(time.time() / step) * step)
    targets, source = build_targets(arguments.targets, step, history, arguments.model, start, traces=arguments.traces)
    runtimes = await warm_runtimes(targets, source, start=start, step=step, history=history)
    steps_an_hour = round(3600.0 / step)
    middle = max(1, arguments.virtual_hours // 2)
    snapshots: dict[int, tracemalloc.Snapshot] = {}
    tracemalloc.start(STACK_DEPTH)
    previous_mib: float | None = None
    print(" hour  traced_MiB  growth_KiB_per_target  wall_s")
    started = time.monotonic()
    for index in range(1, arguments.virtual_hours * steps_an_hour + 1):
        now = start + index * step
        for runtime in runtimes:
            await run_step(runtime, source, now)
        if index % steps_an_hour:
            continue
        hour = index // steps_an_hour
        gc.collect()
        traced_mib = tracemalloc.get_traced_memory()[0] / 2**20
        growth = "" if previous_mib is None else f"{(traced_mib - previous_mib) * 1024 / len(runtimes):.2f}"
        print(f"{hour:5d}  {traced_mib:10.2f}  {growth:>21}  {time.monotonic() - started:6.0f}", flush=True)
        previous_mib = traced_mib
        if hour in (middle, arguments.virtual_hours):
            snapshots[hour] = tracemalloc.take_snapshot()
    tracemalloc.stop()
    if middle == arguments.virtual_hours:
        return
    print(f"\nlargest growth from virtual hour {middle} to {arguments.virtual_hours}:")
    grown = snapshots[arguments.virtual_hours].compare_to(snapshots[middle], "traceback")
    for stat in grown[: arguments.top]:
        print(f"{stat.size_diff / 1024:10.1f} KiB  {stat.count_diff:+8d} blocks")
        for line in stat.traceback.format()[-2 * STACK_DEPTH :]:
            print(f"        {line}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--virtual-hours", type=int, default=24)
    parser.add_argument("--model", default="auto")
    parser.add_argument("--step", default="60s")
    parser.add_argument("--history", default="6h")
    parser.add_argument("--top", type=int, default=5, help="allocation sites to show")
    add_traces_option(parser)
    asyncio.run(trace_memory(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
