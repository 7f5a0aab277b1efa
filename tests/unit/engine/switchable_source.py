"""The demo's replay source with faults a test switches on: an outage, empty answers,
and a series that stopped while its last value is still served."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from autoscaler.adapters.replay import ReplaySample, ReplaySource


class SwitchableSource:
    """Replays a trace, but can be told to fail, to return nothing, or to freeze.

    `frozen_at`: the series got no sample after this time, yet each answer still
    carries its last value, as Prometheus does for its lookback and for a series
    without staleness markers (remote write, exported timestamps).
    """

    def __init__(self, inner: ReplaySource) -> None:
        self.inner = inner
        self.down = False
        self.empty = False
        self.frozen_at: float | None = None
        self.instant_calls = 0
        self.range_seconds = 0.0
        """How long a range answer takes, in wall seconds."""
        self.window_seconds = math.inf
        """A range this long or longer reads a history window (a warm start's, a rebuild's)."""
        self.windows_in_flight = 0
        self.most_windows_in_flight = 0

    async def instant(self, query: str, *, at: float) -> ReplaySample | None:
        self._fail_when_down()
        self.instant_calls += 1
        if self.empty:
            return None
        sample = await self.inner.instant(query, at=at if self.frozen_at is None else min(at, self.frozen_at))
        return None if sample is None else ReplaySample(value=sample.value, timestamp=at)

    async def newest_sample_at(self, queries: Sequence[str], *, at: float) -> float | None:
        self._fail_when_down()
        newest = await self.inner.newest_sample_at(queries, at=at)
        return newest if self.frozen_at is None or newest is None else min(newest, self.frozen_at)

    async def range(self, query: str, *, start: float, end: float, step_seconds: float) -> list[tuple[float, float]]:
        self._fail_when_down()
        window = end - start >= self.window_seconds
        self.windows_in_flight += window
        self.most_windows_in_flight = max(self.most_windows_in_flight, self.windows_in_flight)
        try:
            await asyncio.sleep(self.range_seconds)
            return await self.inner.range(query, start=start, end=end, step_seconds=step_seconds)
        finally:
            self.windows_in_flight -= window

    async def close(self) -> None:
        return None

    def _fail_when_down(self) -> None:
        if self.down:
            raise ConnectionError("injected outage")
