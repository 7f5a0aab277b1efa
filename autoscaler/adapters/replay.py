"""A recorded trace served as a live metric source, for the embedded demo.

The trace is laid on the engine's timeline so that row `offset_rows` falls at
`origin`; earlier rows are the history a warm start reads, later rows arrive as the
(virtual) clock moves on. Past the last row the trace wraps around, so a demo never
runs dry. A query names the trace: `replay:<name>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from autoscaler.domain.types import FloatArray


@dataclass(frozen=True, slots=True)
class ReplaySample:
    value: float
    timestamp: float


@dataclass(frozen=True, slots=True)
class ReplayTrace:
    name: str
    values: FloatArray
    step_seconds: float
    origin: float
    offset_rows: int

    def row_at(self, timestamp: float) -> int:
        return math.floor((timestamp - self.origin) / self.step_seconds + 1e-9) + self.offset_rows

    def value_of_row(self, row: int) -> float:
        return float(self.values[row % len(self.values)])


class UnknownReplayQueryError(LookupError):
    pass


class ReplaySource:
    """Implements the engine's MetricSource over in-memory traces."""

    def __init__(self, traces: list[ReplayTrace]) -> None:
        self._traces = {f"replay:{trace.name}": trace for trace in traces}

    def _trace(self, query: str) -> ReplayTrace:
        try:
            return self._traces[query.strip()]
        except KeyError:
            raise UnknownReplayQueryError(
                f"demo source has no series {query!r}; available: {', '.join(sorted(self._traces))}"
            ) from None

    async def instant(self, query: str, *, at: float) -> ReplaySample | None:
        trace = self._trace(query)
        row = trace.row_at(at)
        if row < 0:
            return None
        return ReplaySample(value=trace.value_of_row(row), timestamp=at)

    async def newest_sample_at(self, queries: Sequence[str], *, at: float) -> float | None:
        """A trace's samples are taken on its steps: the newest is the step at or before `at`."""
        newest: list[float] = []
        for query in queries:
            trace = self._trace(query)
            row = trace.row_at(at)
            if row < 0:
                return None
            newest.append(trace.origin + (row - trace.offset_rows) * trace.step_seconds)
        return min(newest, default=None)

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        trace = self._trace(query)
        points: list[tuple[float, float]] = []
        # Count steps rather than compare floats: at epoch magnitudes an epsilon added
        # to `end` vanishes and the last point would be dropped.
        count = math.floor((end - start) / step_seconds + 1e-6) + 1
        for index in range(max(0, count)):
            timestamp = start + index * step_seconds
            row = trace.row_at(timestamp)
            if row >= 0:
                points.append((timestamp, trace.value_of_row(row)))
        return points

    async def close(self) -> None:
        return None
