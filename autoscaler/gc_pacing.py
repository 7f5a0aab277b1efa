"""Garbage collection paced by the clock instead of by allocations.

CPython collects whenever allocations outnumber deallocations by a threshold. A daemon
that tracks thousands of targets allocates steadily (a decision and a snapshot per
target per step), so collections ran hundreds of times a second, and each one stopped
the event loop, and with it every GetMetrics call in flight. In the soak (5,000
targets) the young ones added up to 5 % of the wall time, some over 100 ms, and the
full ones, over hundreds of thousands of live objects, took 300-500 ms every 15 s.
Yet they found almost nothing to free: the daemon makes next to no reference cycles,
and reference counting frees everything else at once.

So automatic collection is off, and a collection runs on a fixed period from the event
loop. Each one freezes what survives it (`gc.freeze`), so the next looks only at what
came after, and its pause stays short whatever the fleet's size. Every
`thorough_every`-th collection unfreezes first and looks at everything, so a cycle
formed among frozen objects is freed too, within that bound.

Cycles do still come, steadily: grpc.aio leaves six objects in a cycle per call (the
closure of its method lookup), so a collection's pause grows with the call rate as well
as with the fleet. With 5,000 targets (`tests/bench/bench_grpc_load.py --engine real`)
the collection paused 160 ms without calls and 490 ms at 500 calls/s. A 5 s period
made the pauses shorter but no rarer in proportion, and p99 worse (docs/grpc.md).
So a young collection (generation 0 alone) also runs every `young_period_seconds`: it
looks only at what was allocated since the last one and still lives, a second's worth,
and frees those cycles before they reach the periodic collection.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time

log = logging.getLogger("autoscaler.gc")

YOUNG_PERIOD_SECONDS = 1.0


class PacedCollector:
    def __init__(
        self,
        period_seconds: float,
        *,
        young_period_seconds: float | None = YOUNG_PERIOD_SECONDS,
        thorough_every: int = 30,
    ) -> None:
        if not period_seconds > 0:
            raise ValueError("period_seconds must be positive")
        if young_period_seconds is not None and not young_period_seconds > 0:
            raise ValueError("young_period_seconds must be positive, or None for no young collections")
        if thorough_every < 1:
            raise ValueError("thorough_every must be at least 1")
        self.period_seconds = period_seconds
        self.young_period_seconds = young_period_seconds
        self.thorough_every = thorough_every
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Collect, freeze what exists now and take over collections; call on the event loop."""
        gc.collect()
        gc.freeze()
        gc.disable()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._collect_periodically())]
        if self.young_period_seconds is not None:
            self._tasks.append(loop.create_task(self._collect_young_periodically(self.young_period_seconds)))

    async def stop(self) -> None:
        """Give collections back to CPython; what was frozen stays frozen."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        gc.enable()

    @staticmethod
    async def _collect_young_periodically(period_seconds: float) -> None:
        # Only what was allocated since the last collection and still lives: the cycles of
        # the calls answered since (freed here, while few), and the engine's newest objects,
        # which move on to generation 1 for the periodic collection.
        while True:
            await asyncio.sleep(period_seconds)
            gc.collect(0)

    async def _collect_periodically(self) -> None:
        for count in itertools.count(1):
            await asyncio.sleep(self.period_seconds)
            thorough = count % self.thorough_every == 0
            started = time.perf_counter()
            if thorough:
                gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            log.debug(
                "garbage collection",
                extra={
                    "thorough": thorough,
                    "unreachable": found,
                    "pause_ms": round((time.perf_counter() - started) * 1000.0, 1),
                },
            )
