"""Replay a real trace through a real Prometheus, faster than real time.

Time is compressed by a constant factor: one trace step lasts ``wall_step_seconds`` on the
wall clock. The compression is chosen so that the trace's day becomes one wall-clock
hour; the daemon, stepping every ``wall_step_seconds``, then sees the trace's daily cycle
as an hourly one, a calendar cycle its seasonality detection looks for. Everything the
daemon, KEDA and the HPA see keeps its shape; only the clock runs faster.

- history before the replay is backfilled as TSDB blocks (promtool), at the compressed
  spacing and ending just before the live part;
- the live part is played by a thread that sets one gauge of our exporter at each wall
  step; Prometheus scrapes it every second.
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from autoscaler.domain.types import FloatArray
from tests.integration.prometheus_server import (
    EXPORTER_LABELS,
    BackfillSeries,
    MetricsExporter,
    PrometheusHarnessError,
)
from tests.traces import trace_path

SECONDS_PER_DAY = 86400.0
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class CompressedTrace:
    """A trace summed into bins of ``bin_steps`` rows, one bin per ``wall_step_seconds``."""

    name: str
    values: FloatArray
    trace_step_seconds: float
    wall_step_seconds: float

    @property
    def speedup(self) -> float:
        return self.trace_step_seconds / self.wall_step_seconds

    @property
    def steps_per_day(self) -> int:
        return round(SECONDS_PER_DAY / self.trace_step_seconds)

    def index(self, day: int, hour: float) -> int:
        """Bin index of ``hour`` o'clock (trace clock) on trace day ``day``."""
        return day * self.steps_per_day + round(hour * SECONDS_PER_HOUR / self.trace_step_seconds)


def load_compressed_trace(name: str, *, bin_steps: int, wall_step_seconds: float) -> CompressedTrace:
    try:
        path = trace_path(name)
    except FileNotFoundError as error:
        raise PrometheusHarnessError(str(error)) from error
    timestamps: list[float] = []
    values: list[float] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            timestamps.append(float(row["timestamp"]))
            values.append(float(row["value"]))
    raw = np.asarray(values, dtype=np.float64)
    usable = raw.size // bin_steps * bin_steps
    binned: FloatArray = raw[:usable].reshape(-1, bin_steps).sum(axis=1)
    return CompressedTrace(
        name=name,
        values=binned,
        trace_step_seconds=(timestamps[1] - timestamps[0]) * bin_steps,
        wall_step_seconds=wall_step_seconds,
    )


@dataclass
class TraceReplay:
    """Plays ``trace.values[live_start:live_end]`` into one gauge of ``exporter``.

    Step ``i`` of the live part holds from ``started_at + i * wall_step_seconds``; after
    the last step the last value stays, as a quiet trace would.
    """

    trace: CompressedTrace
    exporter: MetricsExporter
    metric: str
    live_start: int
    live_end: int
    started_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @classmethod
    def of_hours(
        cls, trace: CompressedTrace, exporter: MetricsExporter, metric: str, *, day: int, hours: tuple[float, float]
    ) -> TraceReplay:
        """The replay of trace day `day` from hour `hours[0]` to `hours[1]`."""
        return cls(trace, exporter, metric, live_start=trace.index(day, hours[0]), live_end=trace.index(day, hours[1]))

    def history(self, *, end: float, steps: int) -> BackfillSeries:
        """The ``steps`` bins before the live part, the newest at wall time ``end``."""
        if steps > self.live_start:
            raise PrometheusHarnessError(f"{steps} history steps asked, only {self.live_start} before the replay")
        step = self.trace.wall_step_seconds
        chunk = self.trace.values[self.live_start - steps : self.live_start]
        first = end - (steps - 1) * step
        points = [(first + i * step, float(value)) for i, value in enumerate(chunk)]
        return BackfillSeries(metric=self.metric, labels=EXPORTER_LABELS, points=points)

    @property
    def live_values(self) -> FloatArray:
        return self.trace.values[self.live_start : self.live_end]

    @property
    def duration_seconds(self) -> float:
        return (self.live_end - self.live_start) * self.trace.wall_step_seconds

    def step_time(self, step: int) -> float:
        """Wall time at which live step ``step`` starts."""
        return self.started_at + step * self.trace.wall_step_seconds

    def demand_at(self, wall_time: float) -> float:
        """The value the exporter serves at ``wall_time`` (the first value before the start)."""
        step = int((wall_time - self.started_at) // self.trace.wall_step_seconds)
        values = self.live_values
        return float(values[min(max(step, 0), values.size - 1)])

    def start(self, *, at: float) -> None:
        """Serve the first value now; step 0 counts from wall time ``at``."""
        self.exporter.set_gauge(self.metric, float(self.live_values[0]))
        self.started_at = at
        self._thread = threading.Thread(target=self._play, name=f"replay-{self.trace.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def playing(self, wall_time: float) -> bool:
        """Whether ``wall_time`` falls between the replay's start and end."""
        return self.started_at <= wall_time < self.started_at + self.duration_seconds

    def finished(self) -> bool:
        return time.time() >= self.started_at + self.duration_seconds

    def _play(self) -> None:
        values = self.live_values
        for step in range(1, values.size):
            if self._stop.wait(max(self.step_time(step) - time.time(), 0.0)):
                return
            self.exporter.set_gauge(self.metric, float(values[step]))
