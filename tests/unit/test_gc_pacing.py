"""Full garbage collections on the clock: automatic ones off, periodic ones on, undone at stop."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from autoscaler.gc_pacing import NEVER, PacedCollector


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


def old_cyclic_garbage() -> weakref.ref[Node]:
    """A cycle that reached the oldest generation before it became garbage: only a full
    collection frees it."""
    first, second = Node(), Node()
    first.peer, second.peer = second, first
    gc.collect(1)  # survivors of a generation-1 collection move to generation 2
    return weakref.ref(first)


async def test_full_collections_run_on_the_period_and_stop_gives_them_back() -> None:
    before = gc.get_threshold()
    collector = PacedCollector(period_seconds=0.05)
    try:
        collector.start()
        assert gc.get_threshold() == (before[0], before[1], NEVER)
        assert gc.get_freeze_count() > 0  # what existed at start is out of every collection
        garbage = old_cyclic_garbage()
        for _ in range(100):
            if garbage() is None:
                break
            await asyncio.sleep(0.01)
        assert garbage() is None, "the periodic full collection did not run"
    finally:
        await collector.stop()
        gc.unfreeze()
    assert gc.get_threshold() == before


@pytest.mark.parametrize("period", [0.0, -1.0, float("nan")])
def test_the_period_must_be_positive(period: float) -> None:
    with pytest.raises(ValueError, match="period_seconds"):
        PacedCollector(period_seconds=period)
