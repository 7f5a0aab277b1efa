"""Where the event loop stalls: a watcher thread samples the loop thread's stack while
it has not come back to the loop for longer than a threshold.

The loop stamps a heartbeat every `BEAT_SECONDS`. The watcher wakes every
`WATCH_SECONDS`; once the heartbeat is older than `threshold_ms` it records the loop
thread's innermost frames (a Python-level stall gives up the GIL every switch
interval, so the watcher sees it mid-way). A stall is charged, by its length, to the
stack seen most often during it. Garbage-collector pauses hold the GIL throughout; the
benchmarks time them with `gc.callbacks` instead.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

FRAMES_KEPT = 6
BEAT_SECONDS = 0.002
WATCH_SECONDS = 0.005
"""Each wake-up takes the GIL from the loop thread. Waking every millisecond, the watcher
itself took 8-13 % of a core in the soak (py-spy: thread "stall-watch"); every 5 ms
still samples a 20 ms stall a few times."""


@dataclass
class StallReport:
    stalls: int = 0
    longest_ms: float = 0.0
    total_ms: float = 0.0
    by_stack: dict[str, float] = field(default_factory=dict)
    """Stall milliseconds per stack signature."""

    def worst(self, count: int = 3) -> list[tuple[str, float]]:
        return sorted(self.by_stack.items(), key=lambda item: item[1], reverse=True)[:count]


class StallWatch:
    def __init__(self, threshold_ms: float = 20.0) -> None:
        self.threshold = threshold_ms / 1000.0
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._report = StallReport()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._watcher = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def start(self) -> None:
        """Call on the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._stamp()
        self._watcher.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()

    def take(self) -> StallReport:
        """The stalls since the last take."""
        with self._lock:
            report, self._report = self._report, StallReport()
        return report

    def _stamp(self) -> None:
        self._beat = time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(BEAT_SECONDS, self._stamp)

    def _watch(self) -> None:
        seen: Counter[str] = Counter()
        stalled_since: float | None = None
        while not self._stopped.wait(WATCH_SECONDS):
            beat = self._beat
            now = time.monotonic()
            if now - beat > self.threshold:
                stalled_since = beat
                frame = sys._current_frames().get(self._loop_thread)
                if frame is not None:
                    seen[_signature(frame)] += 1
            elif stalled_since is not None:
                self._charge(beat - stalled_since, seen)
                seen, stalled_since = Counter(), None

    def _charge(self, seconds: float, seen: Counter[str]) -> None:
        milliseconds = seconds * 1000.0
        with self._lock:
            report = self._report
            report.stalls += 1
            report.total_ms += milliseconds
            report.longest_ms = max(report.longest_ms, milliseconds)
            stack = seen.most_common(1)[0][0] if seen else "(not sampled: the GIL was held throughout)"
            report.by_stack[stack] = report.by_stack.get(stack, 0.0) + milliseconds


def _signature(frame: FrameType) -> str:
    frames = traceback.extract_stack(frame)[-FRAMES_KEPT:]
    return " < ".join(f"{entry.name} ({Path(entry.filename).name}:{entry.lineno})" for entry in reversed(frames))
