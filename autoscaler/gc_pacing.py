"""Garbage collection of the older generations paced by the clock instead of by allocations.

CPython collects whenever allocations outnumber deallocations by a threshold. A daemon
that tracks thousands of targets allocates steadily (a decision and a snapshot per
target per step), so collections ran hundreds of times a second, and each one stopped
the event loop, and with it every GetMetrics call in flight. In the soak (5,000
targets) the young ones added up to 5 % of the wall time, some over 100 ms, and the
full ones, over hundreds of thousands of live objects, took 300-500 ms every 15 s.
Yet they found almost nothing to free: the daemon makes next to no reference cycles,
and reference counting frees everything else at once.

So the older generations are never collected automatically; a collection runs on a
fixed period from the event loop instead. Each one freezes what survives it
(`gc.freeze`), so the next looks only at what came after, and its pause stays short
whatever the fleet's size. Every `thorough_every`-th collection unfreezes first and
looks at everything, so a cycle formed among frozen objects is freed too, within that
bound.

Generation 0 is still collected by CPython on its allocation count (`young_threshold`),
because cycles do come, steadily: grpc.aio leaves six objects in a cycle per call (the
closure of its method lookup). With automatic collection off altogether they waited for
the periodic collection, whose pause grew with the call rate: with 5,000 targets
(`tests/bench/bench_grpc_load.py --engine real`), 160 ms without calls and 490 ms at
500 calls/s. A 5 s period made the pauses shorter but no rarer in proportion, and p99
worse; a generation-0 collection every second from the loop made the periodic one short
but paused for the whole second's survivors at once (docs/grpc.md). CPython's own young
collections free the cycles a few hundred objects at a time, in pauses too short to
matter, and what survives them waits in generation 1 for the periodic collection.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time

log = logging.getLogger("autoscaler.gc")

YOUNG_THRESHOLD = 700  # CPython's own generation-0 threshold
NEVER = 2**31 - 1  # the largest threshold CPython takes: older generations never come due


class PacedCollector:
    def __init__(
        self,
        period_seconds: float,
        *,
        young_threshold: int | None = YOUNG_THRESHOLD,
        thorough_every: int = 30,
    ) -> None:
        if not period_seconds > 0:
            raise ValueError("period_seconds must be positive")
        if young_threshold is not None and young_threshold < 1:
            raise ValueError("young_threshold must be at least 1, or None for no young collections")
        if thorough_every < 1:
            raise ValueError("thorough_every must be at least 1")
        self.period_seconds = period_seconds
        self.young_threshold = young_threshold
        self.thorough_every = thorough_every
        self._task: asyncio.Task[None] | None = None
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        """Collect, freeze what exists now and take over collections; call on the event loop."""
        gc.collect()
        gc.freeze()
        self._thresholds = gc.get_threshold()
        if self.young_threshold is None:
            gc.disable()
        else:
            # CPython still collects generation 0 on its allocation count, which frees the
            # calls' cycles a few hundred objects at a time; what survives moves on to
            # generation 1 and waits for the periodic collection.
            gc.set_threshold(self.young_threshold, NEVER, NEVER)
        self._task = asyncio.get_running_loop().create_task(self._collect_periodically())

    async def stop(self) -> None:
        """Give collections back to CPython; what was frozen stays frozen."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        gc.set_threshold(*self._thresholds)
        gc.enable()

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
