"""Where the engine reads metrics from: Prometheus in production, a replayed trace in the demo."""

from __future__ import annotations

from typing import Protocol


class SampleLike(Protocol):
    @property
    def value(self) -> float: ...

    @property
    def timestamp(self) -> float: ...


class MetricSource(Protocol):
    async def instant(self, query: str, *, at: float) -> SampleLike | None:
        """The query's single value at `at`, or None when there is no data."""
        ...

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        """(timestamp, value) pairs over [start, end] on the step grid; gaps are absent."""
        ...

    async def close(self) -> None: ...
