"""Whether the event-loop thread had a CPU: its own CPU time and its run-queue wait.

A stall charged to a line that does no work means the loop thread was runnable but not
running: other threads or processes had both cores, or the hypervisor took the vCPU.
Linux keeps both for each thread in `/proc/<pid>/task/<tid>/schedstat` (nanoseconds
on a CPU, nanoseconds waiting on a run queue), and the machine's stolen time in
`/proc/stat`. Read once per report, so it costs nothing in between. Linux only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadCpu:
    cpu_share: float
    """Share of one core the thread ran, over the wall time since the last reading."""
    run_queue_ms_per_second: float
    """Milliseconds a wall second it was runnable but waited for a CPU."""
    steal_share: float
    """Share of the machine's CPU time the hypervisor took (VM steal)."""


class ThreadCpuMeter:
    """Readings for the thread that creates it (the event loop's)."""

    def __init__(self) -> None:
        self._schedstat = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat")
        self._last = self._read()

    def _read(self) -> tuple[float, int, int, int, int]:
        running_ns, waiting_ns, _ = self._schedstat.read_text().split()
        with open("/proc/stat") as handle:
            ticks = [int(field) for field in handle.readline().split()[1:]]
        steal = ticks[7] if len(ticks) > 7 else 0
        return time.monotonic(), int(running_ns), int(waiting_ns), steal, sum(ticks)

    def take(self) -> ThreadCpu:
        now = self._read()
        wall, running, waiting, steal, total = (later - earlier for later, earlier in zip(now, self._last, strict=True))
        self._last = now
        wall = max(wall, 1e-9)
        return ThreadCpu(
            cpu_share=running / 1e9 / wall,
            run_queue_ms_per_second=waiting / 1e6 / wall,
            steal_share=steal / total if total else 0.0,
        )
