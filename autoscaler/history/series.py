"""A fixed-step ring buffer per series.

Samples are aligned to a grid of `step_seconds`. A step with no sample holds NaN, so
gaps stay visible to the forecasters and to the staleness check instead of being
papered over. Appends and point writes are O(1); reading the window copies it once.
"""

from __future__ import annotations

import math

import numpy as np

from autoscaler.domain.types import FloatArray


class SeriesBuffer:
    """The last `capacity` steps of one metric, oldest first when read."""

    __slots__ = ("_end_step", "_filled_count", "_last_sample_at", "_ring", "capacity", "step_seconds")

    def __init__(self, *, step_seconds: float, capacity: int) -> None:
        if step_seconds <= 0 or capacity <= 0:
            raise ValueError("step_seconds and capacity must be positive")
        self.step_seconds = float(step_seconds)
        self.capacity = int(capacity)
        self._ring: FloatArray = np.full(self.capacity, np.nan)
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
            skipped = index - self._end_step
            for gap_index in range(self._end_step, min(index, self._end_step + self.capacity)):
                self._ring[gap_index % self.capacity] = np.nan
            self._filled_count = min(self.capacity, self._filled_count + skipped + 1)
            self._end_step = index + 1
        elif index < self._end_step - self.capacity:
            return False
        else:
            first = self._end_step - self._filled_count
            if index < first:
                for gap_index in range(index + 1, first):
                    self._ring[gap_index % self.capacity] = np.nan
                self._filled_count = self._end_step - index
        self._ring[index % self.capacity] = value
        if math.isfinite(value) and (self._last_sample_at is None or timestamp > self._last_sample_at):
            self._last_sample_at = float(timestamp)
        return True

    def values(self) -> FloatArray:
        """The window's values, oldest first, NaN where no sample arrived."""
        if self._end_step is None:
            return np.empty(0)
        count = len(self)
        start = self._end_step - count
        positions = np.arange(start, self._end_step) % self.capacity
        return self._ring[positions].copy()

    def timestamps(self) -> FloatArray:
        if self._end_step is None:
            return np.empty(0)
        count = len(self)
        return np.arange(self._end_step - count, self._end_step, dtype=np.float64) * self.step_seconds

    def latest(self) -> float:
        """Newest slot's value (NaN when that step had no sample)."""
        if self._end_step is None:
            return math.nan
        return float(self._ring[(self._end_step - 1) % self.capacity])
