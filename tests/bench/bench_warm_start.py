"""What a warm start, and the daily rebuild, cost now that they replay the history (not a timed test).

A restarted replica rebuilds each target's state by replaying its history window
through the pipeline (`autoscaler.planner.replay`): the fits the data called for and
the decisions of the calibrator's window; every replica makes the same replay once a
day. This prints the CPU seconds of one target's replay, one fit worker, for each
model and history length (data that began that long ago; the window is 7 days), beside
the single fit the warm start made before, and what the replay means for a fleet
warm-starting on the default single fit worker.

    .venv/bin/python -m tests.bench.bench_warm_start [--traces DIR] [--models auto ets naive]
"""

from __future__ import annotations

import argparse
import time

from autoscaler.domain.signals import SignalKind, StepSignals
from autoscaler.domain.spec import ScalerSpec, parse_spec
from autoscaler.planner.pipeline import TargetPipeline, fit_for
from autoscaler.planner.replay import rebuild_boundary, rebuilt_pipeline
from tests.traces import add_traces_option, read_trace, trace_in

TRACE = "nasa_http_jul95.csv"
STEP = 60.0
ORIGIN = 1_700_006_400.0
FLEET = 5_000
FIT_WORKERS = 1  # the daemon's default (engine.fitWorkers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_traces_option(parser)
    parser.add_argument("--models", nargs="+", default=["auto", "ets", "naive"])
    parser.add_argument("--days", nargs="+", type=float, default=[1.0, 3.0, 7.0])
    args = parser.parse_args()
    values = read_trace(trace_in(args.traces, TRACE)).values
    print(f"trace {TRACE}, 60 s steps, historyWindow 7d, leadTime 180s; one process, CPU seconds")
    print("| model | history | steps | replay CPU s | one fit of the window CPU s | replay: 5,000 targets, 1 worker |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        spec = parse_spec(
            {"query": "q", "capacityPerReplica": "20", "step": "60s", "leadTime": "180s", "historyWindow": "7d",
             "model": model}
        )  # fmt: skip
        for days in args.days:
            rows = min(len(values), int(days * 1440))
            steps = [
                StepSignals(timestamp=ORIGIN + row * STEP, values={SignalKind.ARRIVALS: float(values[row])})
                for row in range(rows)
            ]
            started = time.process_time()
            boundary = rebuild_boundary(spec, refit_phase_steps=0, at=steps[-1].timestamp)
            pipeline = rebuilt_pipeline(spec, steps, refit_phase_steps=0, boundary=boundary)
            seconds = time.process_time() - started
            assert pipeline.decision is not None
            fleet_hours = seconds * FLEET / FIT_WORKERS / 3600
            print(
                f"| {model} | {days:g} d | {len(steps)} | {seconds:.2f} | {one_fit_seconds(spec, steps):.2f} "
                f"| {fleet_hours:.1f} h |"
            )


def one_fit_seconds(spec: ScalerSpec, steps: list[StepSignals]) -> float:
    """What the warm start did before it replayed: one fit of the whole window."""
    pipeline = TargetPipeline(spec)
    for step in steps:
        pipeline.observe_step(step)
    inputs = pipeline.refit_inputs()
    started = time.process_time()
    fit_for(inputs)
    return time.process_time() - started


if __name__ == "__main__":
    main()
