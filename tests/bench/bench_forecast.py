"""Forecaster cost benchmark (not a pytest test).

    python -m tests.bench.bench_forecast [--series 3] [--refit-hours 6] [--fleet 1000] [--traces DIR]

Series are 7-day slices of the NASA July 1995 trace at its 1-minute step, taken at
different offsets and scaled differently, so every model sees realistic data. Times
are CPU time of this process (`time.process_time`), which stays meaningful on a busy
machine where wall time is inflated by other processes.

`--backtest` also replays the whole NASA trace (39,692 minutes) through `auto` as a
backtest would: starting from two hours of history, refitting once per simulated day
on the trailing 7 days, with one update and one forecast per minute in between.

The fleet figure is the daemon's steady state: every series gets one `update` and one
`predict(horizon)` per step and is refitted every `--refit-hours`; the CPU seconds
this takes per wall-clock second is the share of one core it needs.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from autoscaler.domain.types import FloatArray
from autoscaler.forecast.base import Forecaster
from autoscaler.forecast.selector import make_forecaster
from tests.traces import add_traces_option, trace_in

TRACE = "nasa_http_jul95.csv"
STEP_SECONDS = 60.0
WEEK = 7 * 1440
FIT_POINTS = 10_000
LEAD_STEPS = 3  # a 180 s pod lead time at a 60 s step
HORIZON = 8  # pod lead plus a 300 s node lead
MODELS = ("naive", "seasonal_naive", "ets", "mstl", "gbm", "auto")


@dataclass(frozen=True)
class Figures:
    model: str
    served_by: str
    fit_s: float
    update_us: float
    predict_us: float
    state_kib: float

    def fleet_cores(self, *, fleet: int, refit_hours: float) -> float:
        steps_between_refits = refit_hours * 3600 / STEP_SECONDS
        per_step = (self.update_us + self.predict_us) * 1e-6 + self.fit_s / steps_between_refits
        return fleet * per_step / STEP_SECONDS


def fleet_series(count: int, *, traces: Path) -> list[FloatArray]:
    values = np.loadtxt(trace_in(traces, TRACE), delimiter=",", skiprows=1, dtype=np.float64)[:, 1]
    offsets = np.linspace(0, values.size - WEEK - 2000, count).astype(int)
    scales = (1.0, 0.01, 1000.0, 3.0)
    return [values[offset : offset + WEEK + 2000] * scales[index % len(scales)] for index, offset in enumerate(offsets)]


def cpu_seconds(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def retained_kib(build: Callable[[], Forecaster]) -> tuple[Forecaster, float]:
    """The fitted model and the memory it keeps (tracemalloc, after the fit's garbage)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    model = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return model, (after - before) / 1024


def feed(model: Forecaster, stream: FloatArray) -> None:
    for value in stream:
        model.update(float(value))


def predict_repeatedly(model: Forecaster, times: int) -> None:
    for _ in range(times):
        model.predict(HORIZON)


def measure(name: str, series: list[FloatArray], *, predicts: int = 500) -> Figures:
    fit_s: list[float] = []
    update_s: list[float] = []
    predict_s: list[float] = []
    sizes: list[float] = []
    served: set[str] = set()
    for values in series:
        history, stream = values[:FIT_POINTS], values[FIT_POINTS:]

        def fitted(history: FloatArray = history) -> Forecaster:
            return make_forecaster(name, lead_steps=LEAD_STEPS).fit(history, step_seconds=STEP_SECONDS)

        start = time.process_time()
        model = fitted()
        fit_s.append(time.process_time() - start)
        sizes.append(retained_kib(fitted)[1])
        update_s.append(cpu_seconds(partial(feed, model, stream)) / stream.size)
        predict_s.append(cpu_seconds(partial(predict_repeatedly, model, predicts)) / predicts)
        served.add(model.predict(HORIZON).model)
    return Figures(
        model=name,
        served_by="/".join(sorted(served)),
        fit_s=statistics.median(fit_s),
        update_us=statistics.median(update_s) * 1e6,
        predict_us=statistics.median(predict_s) * 1e6,
        state_kib=statistics.median(sizes),
    )


def replay_nasa(*, traces: Path, refit_every: int = 1440, first_fit: int = 120) -> None:
    values = np.loadtxt(trace_in(traces, TRACE), delimiter=",", skiprows=1, dtype=np.float64)[:, 1]
    forecasts = np.full(values.size, np.nan)
    chosen: list[str] = []
    start = time.process_time()
    model: Forecaster | None = None
    refit_cpu = 0.0
    for index in range(first_fit, values.size - LEAD_STEPS):
        if model is None or (index - first_fit) % refit_every == 0:
            refit_start = time.process_time()
            model = make_forecaster("auto", lead_steps=LEAD_STEPS).fit(
                values[max(0, index - WEEK) : index], step_seconds=STEP_SECONDS
            )
            refit_cpu += time.process_time() - refit_start
            chosen.append(model.predict(1).model)
        else:
            model.update(float(values[index - 1]))
        forecasts[index + LEAD_STEPS - 1] = model.predict(LEAD_STEPS).median()[-1]
    total = time.process_time() - start
    scored = np.isfinite(forecasts)
    scored[: first_fit + LEAD_STEPS] = False
    naive = np.roll(values, LEAD_STEPS)
    model_error = float(np.mean(np.abs(values[scored] - forecasts[scored])))
    naive_error = float(np.mean(np.abs(values[scored] - naive[scored])))
    steps = values.size - first_fit - LEAD_STEPS
    print(
        f"NASA replay: {steps} steps, {len(chosen)} refits ({refit_cpu:.1f} s CPU, "
        f"{refit_cpu / len(chosen):.2f} s each), total {total:.1f} s CPU "
        f"({(total - refit_cpu) / steps * 1e6:.0f} us per update+predict); MAE at lead {LEAD_STEPS}: "
        f"auto {model_error:.2f} vs naive {naive_error:.2f}; models chosen: {' '.join(chosen)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=3, help="series measured per model")
    parser.add_argument("--refit-hours", type=float, default=6.0, help="hours between refits of one series")
    parser.add_argument("--fleet", type=int, default=1000, help="series kept fresh")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--backtest", action="store_true", help="also replay the NASA trace through auto")
    add_traces_option(parser)
    args = parser.parse_args()
    series = fleet_series(args.series, traces=args.traces)
    print(
        f"{args.series} series of {FIT_POINTS} points (1-min NASA slices), update over {WEEK + 2000 - FIT_POINTS} "
        f"points, predict horizon {HORIZON}, lead {LEAD_STEPS}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    header = (
        f"{'model':<15}{'served by':<34}{'fit 10k (s)':>12}{'update (us)':>13}{'predict (us)':>14}"
        f"{'state (KiB)':>13}{'fleet cores':>13}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        figures = measure(name, series)
        cores = figures.fleet_cores(fleet=args.fleet, refit_hours=args.refit_hours)
        print(
            f"{figures.model:<15}{figures.served_by:<34}{figures.fit_s:>12.3f}{figures.update_us:>13.1f}"
            f"{figures.predict_us:>14.1f}{figures.state_kib:>13.1f}{cores:>13.3f}"
        )
    print(
        f"fleet cores = {args.fleet} series x (update + predict + fit / steps between refits) per 60 s step, "
        f"one refit per series every {args.refit_hours:g} h"
    )
    if args.backtest:
        replay_nasa(traces=args.traces)


if __name__ == "__main__":
    main()
