"""A fixed-size ring of the most recent values, for O(1) updates between refits."""

from __future__ import annotations

import numpy as np

from autoscaler.domain.types import FloatArray


class RecentWindow:
    """The last `capacity` values of a series; `append` overwrites the oldest."""

    __slots__ = ("_buffer", "_next")

    def __init__(self, initial: FloatArray, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        tail = initial[-capacity:]
        self._buffer: FloatArray = np.full(capacity, np.nan)
        self._buffer[capacity - tail.size :] = tail
        self._next = 0

    @property
    def capacity(self) -> int:
        return int(self._buffer.size)

    def append(self, value: float) -> None:
        self._buffer[self._next] = value
        self._next = (self._next + 1) % self._buffer.size

    def ordered(self) -> FloatArray:
        """All values, oldest first (a copy)."""
        return np.concatenate((self._buffer[self._next :], self._buffer[: self._next]))

    def nbytes(self) -> int:
        return int(self._buffer.nbytes)
