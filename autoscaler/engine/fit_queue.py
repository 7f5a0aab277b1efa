"""Which targets' refits run next, with a bound on how many run at once.

Thousands of targets come due together (every target after a restart, a fleet
registered at once), far more than the fit workers can take. Handing each to the
executor at once would queue thousands of tasks, futures and copies of history on the
daemon's heap, each long-lived enough to reach the garbage collector's oldest
generation, whose full collections then stop the event loop for hundreds of
milliseconds. Here a waiting target is one entry in a deque, and its history is read
only when its fit starts, so the fit sees the newest data.

A fit that a serving target's step waits on (a refit due at that step: the step's
decision follows it) goes before a warm-start replay, which only a WARMING target
waits on: a fleet warm-starting for hours must not hold up the decisions of the
targets already serving.
"""

from __future__ import annotations

from collections import deque

from autoscaler.domain.types import TargetKey


class FitQueue:
    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._blocking: deque[TargetKey] = deque()
        self._background: deque[TargetKey] = deque()
        self._queued: set[TargetKey] = set()
        self._running: set[TargetKey] = set()

    def __len__(self) -> int:
        """Targets waiting for a fit to start."""
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self._running)

    def is_pending(self, key: TargetKey) -> bool:
        """Waiting or running: asking again adds nothing."""
        return key in self._queued or key in self._running

    def request(self, key: TargetKey, *, blocking: bool) -> None:
        """Queue `key`; `blocking` when a serving target's decision waits on this fit."""
        if self.is_pending(key):
            return
        self._queued.add(key)
        (self._blocking if blocking else self._background).append(key)

    def discard(self, key: TargetKey) -> None:
        """Forget a waiting target (evicted); a running fit finishes on its own."""
        self._queued.discard(key)

    def start_next(self) -> TargetKey | None:
        """The next target to fit, now marked running, or None when all slots are busy."""
        if len(self._running) >= self.concurrency:
            return None
        for waiting in (self._blocking, self._background):
            while waiting:
                key = waiting.popleft()
                if key in self._queued:  # else discarded while it waited
                    self._queued.remove(key)
                    self._running.add(key)
                    return key
        return None

    def finished(self, key: TargetKey) -> None:
        self._running.discard(key)
