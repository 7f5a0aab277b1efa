"""Clocks: the only place outside tests where time is read.

The engine takes a `Clock`, so tests and the demo can run it on virtual time: a
`ScaledClock` makes one wall second count as `speed` seconds, which replays a day of
traffic in minutes while staleness bounds, steps and lead times keep their meaning.
A `ReplayClock` is a `ScaledClock` pinned to the epoch wall clock, so separate
processes, and a process restarted, share one virtual timeline (`clock.source: replay`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
    """Virtual time that is `start` at wall reading `wall_origin` and runs `speed` times faster than the wall.

    The wall is the monotonic clock unless given, and its origin is the moment the clock
    is made: one process's timeline, unmoved when the system clock is stepped.
    """

    def __init__(
        self,
        *,
        start: float,
        speed: float,
        wall: Callable[[], float] = time.monotonic,
        wall_origin: float | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start = start
        self._wall = wall
        self._wall_origin = wall() if wall_origin is None else wall_origin

    def now(self) -> float:
        return self._start + (self._wall() - self._wall_origin) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class ReplayClock(ScaledClock):
    """Virtual time `start + (time.time() - wall_origin) * speed`: a timeline fixed by its settings alone.

    The epoch wall clock, not the monotonic one: monotonic readings of two processes (or
    of one process before and after a restart) share no origin, and a replica or a
    restarted daemon must land on the same virtual instant as one that kept running.
    """

    def __init__(self, *, start: float, speed: float, wall_origin: float) -> None:
        super().__init__(start=start, speed=speed, wall=time.time, wall_origin=wall_origin)
