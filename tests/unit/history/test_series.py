from __future__ import annotations

import numpy as np
import pytest

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

