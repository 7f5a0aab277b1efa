from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.domain.types import FloatArray
from autoscaler.history.series import SeriesBuffer


def test_appends_in_order_and_wraps() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=4)
    for second in range(0, 60, 10):
        assert buffer.put(second, float(second))
    np.testing.assert_array_equal(buffer.values(), [20, 30, 40, 50])
    np.testing.assert_array_equal(buffer.timestamps(), [20, 30, 40, 50])
    assert buffer.end_timestamp == 60
    assert buffer.latest() == 50


def test_skipped_steps_are_nan_and_samples_align_to_the_grid() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=10)
    buffer.put(1.0, 1.0)
    buffer.put(35.0, 3.0)
    values = buffer.values()
    assert values[0] == 1.0 and values[-1] == 3.0
    assert np.isnan(values[1:3]).all()
    assert buffer.last_sample_at == 35.0


def test_backfill_overwrites_inside_window_and_rejects_older() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=5)
    buffer.put(0, 0.0)
    buffer.put(40, 4.0)
    assert np.isnan(buffer.values()[1:4]).all()
    assert all(buffer.put(second, second / 10) for second in (10, 20, 30))
    np.testing.assert_array_equal(buffer.values(), [0, 1, 2, 3, 4])
    buffer.put(60, 6.0)
    assert not buffer.put(0, 9.0)  # older than the window


def test_backfill_before_first_sample_extends_the_window() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=5)
    buffer.put(40, 4.0)
    buffer.put(10, 1.0)
    np.testing.assert_array_equal(buffer.values()[[0, 3]], [1.0, 4.0])
    assert len(buffer) == 4


def test_nan_sample_does_not_move_last_sample_at() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=5)
    buffer.put(0, 1.0)
    buffer.put(10, float("nan"))
    assert buffer.last_sample_at == 0


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="positive"):
        SeriesBuffer(step_seconds=0, capacity=1)


def test_a_window_read_earlier_is_never_changed_by_later_writes() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=4)
    for second in (0, 10, 30):
        buffer.put(second, second / 10)
    earlier = buffer.values()
    expected = earlier.copy()
    buffer.put(20, 2.0)  # a backfill inside the window
    for second in range(40, 200, 10):  # past two moves to a new store
        buffer.put(second, second / 10)
    np.testing.assert_array_equal(earlier, expected)
    np.testing.assert_array_equal(buffer.values(), [16, 17, 18, 19])


def test_the_window_read_is_read_only() -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=4)
    buffer.put(0, 1.0)
    with pytest.raises(ValueError, match="read-only"):
        buffer.values()[0] = 2.0


class ReferenceWindow:
    """What a SeriesBuffer must hold, kept as a dict of steps: slow and obviously right."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.written: dict[int, float] = {}
        self.end: int | None = None
        self.first: int | None = None

    def put(self, step: int, value: float) -> bool:
        if self.end is None or self.first is None:
            self.end, self.first = step + 1, step
        elif step >= self.end:
            self.end = step + 1
            self.first = max(self.first, self.end - self.capacity)
        elif step < self.end - self.capacity:
            return False
        else:
            self.first = min(self.first, step)
        self.written[step] = value
        return True

    def values(self) -> list[float]:
        if self.end is None or self.first is None:
            return []
        return [self.written.get(step, math.nan) for step in range(self.first, self.end)]


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 9),
    writes=st.lists(
        st.tuples(st.integers(0, 60), st.one_of(st.floats(-5, 5), st.just(math.nan)), st.booleans()), max_size=60
    ),
)
def test_every_sequence_of_writes_matches_the_reference_and_leaves_earlier_reads_alone(
    capacity: int, writes: list[tuple[int, float, bool]]
) -> None:
    buffer = SeriesBuffer(step_seconds=10, capacity=capacity)
    reference = ReferenceWindow(capacity)
    reads: list[tuple[FloatArray, FloatArray]] = []
    for step, value, read in writes:
        assert buffer.put(step * 10, value) == reference.put(step, value)
        if read:  # only sometimes: writes with no view out take the path that writes in place
            view = buffer.values()
            np.testing.assert_array_equal(view, reference.values())
            reads.append((view, view.copy()))
    np.testing.assert_array_equal(buffer.values(), reference.values())
    for view, copy in reads:
        np.testing.assert_array_equal(view, copy)
