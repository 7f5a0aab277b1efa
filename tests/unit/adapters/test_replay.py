from __future__ import annotations

import numpy as np
import pytest

from autoscaler.adapters.replay import ReplaySource, ReplayTrace, UnknownReplayQueryError

ORIGIN = 1_700_000_000.0  # not a multiple of the step: grids must not assume alignment


def source(offset_rows: int = 3) -> ReplaySource:
    values = np.arange(10, dtype=np.float64)
    return ReplaySource(
        [ReplayTrace(name="t", values=values, step_seconds=60.0, origin=ORIGIN, offset_rows=offset_rows)]
    )


async def test_range_includes_both_ends_at_epoch_magnitudes() -> None:
    points = await source().range("replay:t", start=ORIGIN - 180, end=ORIGIN, step_seconds=60)
    assert [timestamp - ORIGIN for timestamp, _ in points] == [-180, -120, -60, 0]
    assert [value for _, value in points] == [0, 1, 2, 3]


async def test_no_data_before_the_trace_and_wraparound_after() -> None:
    replay = source()
    assert await replay.instant("replay:t", at=ORIGIN - 240) is None
    sample = await replay.instant("replay:t", at=ORIGIN + 60 * 8)
    assert sample is not None and sample.value == 1.0  # row 11 wraps to row 1
    assert (await replay.range("replay:t", start=ORIGIN - 600, end=ORIGIN - 120, step_seconds=60))[0][1] == 0


async def test_unknown_series_names_the_available_ones() -> None:
    with pytest.raises(UnknownReplayQueryError, match="replay:t"):
        await source().instant("replay:other", at=ORIGIN)
