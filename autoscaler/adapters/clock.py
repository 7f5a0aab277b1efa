"""Clocks: the only place outside tests where time is read.

The engine takes a `Clock`, so tests and the demo can run it on virtual time: a
`ScaledClock` makes one wall second count as `speed` seconds, which replays a day of
traffic in minutes while staleness bounds, steps and lead times keep their meaning.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, on this clock's timeline."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Virtual time that starts at `start` and runs `speed` times faster than the wall."""

    def __init__(self, *, start: float, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = start
        self._wall_origin = time.monotonic()

    def now(self) -> float:
        return self._start + (time.monotonic() - self._wall_origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)
