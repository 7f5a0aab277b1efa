"""Full garbage collections paced by the clock instead of by allocations.

CPython starts a full collection once enough objects have survived into its oldest
generation. A daemon that tracks thousands of targets keeps hundreds of thousands of
live objects there, so every full collection stops the event loop, and with it every
GetMetrics call in flight, for 100-500 ms; a fleet's steady churn (a new decision and
snapshot per target per step) brought one every few seconds, and the soak's GetMetrics
p99 was that pause.

So full collections run on a fixed period instead, from the event loop: the pause
stays, but it touches a small share of calls, whatever the fleet's size or churn.
Young collections stay automatic; they look at a few thousand objects and take well
under a millisecond. What the daemon holds once it has started (modules, settings,
its servers) is frozen out of every later collection, so a pause covers only what
came after. Only cyclic garbage waits for the next period; everything else is freed
by reference counting as before.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("autoscaler.gc")

NEVER = 2**31 - 1
"""A gen-2 threshold that automatic collection never reaches."""


class PacedCollector:
    def __init__(self, period_seconds: float) -> None:
        if not period_seconds > 0:
            raise ValueError("period_seconds must be positive")
        self.period_seconds = period_seconds
        self._saved_thresholds: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Freeze what exists now and take over full collections; call on the event loop."""
        gc.collect()
        gc.freeze()
        young, middle, _ = self._saved_thresholds = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)
        self._task = asyncio.get_running_loop().create_task(self._collect_periodically())

    async def stop(self) -> None:
        """Give full collections back to CPython; what was frozen stays frozen."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._saved_thresholds is not None:
            gc.set_threshold(*self._saved_thresholds)
            self._saved_thresholds = None

    async def _collect_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.period_seconds)
            started = time.perf_counter()
            found = gc.collect()
            log.debug(
                "full garbage collection",
                extra={"unreachable": found, "pause_ms": round((time.perf_counter() - started) * 1000.0, 1)},
            )
