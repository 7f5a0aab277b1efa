"""Turns for CPU-bound steps, so the event loop polls its sockets between them.

Thousands of targets come due at the same step boundary. Run back to back, their
updates and plans would hold the loop for seconds, and every gRPC call arriving
meanwhile would wait that long. A task takes a turn before its CPU-bound step; turns
are granted one per loop iteration, in arrival order, and the loop services I/O in
between, so a call waits for at most one step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Turns:
    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._busy = False

    def __len__(self) -> int:
        """Tasks waiting for a turn."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        self._waiting.append(granted)
        if not self._busy:
            self._busy = True
            loop.call_soon(self._grant_next)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted, then cancelled: pass the turn on
                loop.call_soon(self._grant_next)
            raise
        try:
            yield
        finally:
            loop.call_soon(self._grant_next)  # the next turn starts after the loop has polled I/O

    def _grant_next(self) -> None:
        while self._waiting:
            granted = self._waiting.popleft()
            if not granted.done():  # a waiter cancelled before its turn is skipped
                granted.set_result(None)
                return
        self._busy = False
