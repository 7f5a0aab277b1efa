"""A fixed-step window per series.

Samples are aligned to a grid of `step_seconds`. A step with no sample holds NaN, so
gaps stay visible to the forecasters and to the staleness check instead of being
papered over. Appends and point writes are O(1), and so is reading the window: it is a
read-only view, which later writes never change (copy on write), so the engine can
publish it with every step without copying.
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.domain.types import FloatArray


class SeriesBuffer:
    """The last `capacity` steps of one metric, oldest first when read.

    The window lies in a store of twice its capacity, ending at `_end`. Appends write
    past the end, where no view handed out reaches; when the store is full, the window
    moves to a new one. A write inside the window (a backfill) copies the store first
    if a view of it was handed out.
    """

    __slots__ = (
        "_end",
        "_end_step",
        "_filled_count",
        "_last_sample_at",
        "_shared",
        "_store",
        "capacity",
        "step_seconds",
    )

    def __init__(self, *, step_seconds: float, capacity: int) -> None:
        if step_seconds <= 0 or capacity <= 0:
            raise ValueError("step_seconds and capacity must be positive")
        self.step_seconds = float(step_seconds)
        self.capacity = int(capacity)
        self._store: FloatArray = np.full(2 * self.capacity, np.nan)
        # Store position one past the newest slot. Never below `capacity`, so every step
        # of the window has a position; slots never written hold NaN.
        self._end = self.capacity
        self._shared = False
        self._end_step: int | None = None  # grid index one past the newest slot
        self._last_sample_at: float | None = None
        self._filled_count = 0

    def step_index(self, timestamp: float) -> int:
        return math.floor(timestamp / self.step_seconds + 1e-9)

    @property
    def end_timestamp(self) -> float | None:
        """Start of the step after the newest slot, or None when empty."""
        return None if self._end_step is None else self._end_step * self.step_seconds

    @property
    def last_sample_at(self) -> float | None:
        """Timestamp of the newest real (non-NaN) sample written."""
        return self._last_sample_at

    def __len__(self) -> int:
        return self._filled_count

    def put(self, timestamp: float, value: float) -> bool:
        """Write one sample at its grid step. Returns False when it is older than the window.

        Writing ahead of the newest slot advances the window and NaN-fills the skipped
        steps; writing inside the window overwrites (a backfill after an outage).
        """
        index = self.step_index(timestamp)
        if self._end_step is None:
            self._end_step = index + 1
            self._filled_count = 1
        elif index >= self._end_step:
            advance = index + 1 - self._end_step
            self._move_end(advance)
            self._filled_count = min(self.capacity, self._filled_count + advance)
            self._end_step = index + 1
        elif index < self._end_step - self.capacity:
            return False
        else:
            if self._shared:
                self._store = self._store.copy()
                self._shared = False
            # Extending the window back: the slots between were never written, so hold NaN.
            self._filled_count = max(self._filled_count, self._end_step - index)
        self._store[self._end - (self._end_step - index)] = value
        if math.isfinite(value) and (self._last_sample_at is None or timestamp > self._last_sample_at):
            self._last_sample_at = float(timestamp)
        return True

    def _move_end(self, advance: int) -> None:
        """Move the end `advance` slots on, into a new store when this one is full."""
        if advance >= self.capacity:
            self._store = np.full(2 * self.capacity, np.nan)
            self._end = self.capacity
            self._shared = False
            return
        if self._end + advance > self._store.size:
            fresh = np.full(2 * self.capacity, np.nan)
            kept = self._filled_count
            fresh[self.capacity - kept : self.capacity] = self._store[self._end - kept : self._end]
            self._store, self._end, self._shared = fresh, self.capacity, False
        self._end += advance

    def values(self) -> FloatArray:
        """The window's values, oldest first, NaN where no sample arrived: a read-only
        view that later writes leave as it is."""
        if self._end_step is None:
            return np.empty(0)
        view = self._store[self._end - self._filled_count : self._end]
        view.flags.writeable = False
        self._shared = True
        return view

    def timestamps(self) -> FloatArray:
        if self._end_step is None:
            return np.empty(0)
        count = len(self)
        return np.arange(self._end_step - count, self._end_step, dtype=np.float64) * self.step_seconds

    def latest(self) -> float:
        """Newest slot's value (NaN when that step had no sample)."""
        if self._end_step is None:
            return math.nan
        return float(self._store[self._end - 1])
