"""Garbage collection on the clock: automatic collection off, periodic ones on, undone at stop."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import pytest

from autoscaler.gc_pacing import PacedCollector


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


def cycle_made_garbage(before_dropping: Callable[[], object]) -> weakref.ref[Node]:
    first, second = Node(), Node()
    first.peer, second.peer = second, first
    before_dropping()
    return weakref.ref(first)


async def freed(garbage: weakref.ref[Node]) -> bool:
    for _ in range(100):
        if garbage() is None:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_collections_run_on_the_period_and_stop_gives_them_back() -> None:
    thresholds = gc.get_threshold()
    collector = PacedCollector(period_seconds=0.05, young_threshold=None)
    try:
        collector.start()
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0  # what existed at start is out of every collection
        # Survivors of a generation-1 collection sit where only a full collection looks.
        assert await freed(cycle_made_garbage(lambda: gc.collect(1))), "the periodic collection did not run"
    finally:
        await collector.stop()
        gc.unfreeze()
    assert gc.isenabled()
    assert gc.get_threshold() == thresholds


async def test_young_cycles_are_freed_by_cpython_and_older_ones_wait_for_the_period() -> None:
    thresholds = gc.get_threshold()
    collector = PacedCollector(period_seconds=3600.0, young_threshold=100)
    try:
        collector.start()
        assert gc.isenabled()
        young = cycle_made_garbage(lambda: None)
        survivor = cycle_made_garbage(lambda: gc.collect(0))  # moved on to generation 1 while alive
        allocations = [[] for _ in range(1000)]  # ten times the threshold: generation 0 comes due
        assert young() is None, "generation 0 was not collected on its allocation count"
        assert survivor() is not None, "an older generation was collected before the period"
        del allocations
    finally:
        await collector.stop()
        gc.unfreeze()
    assert gc.get_threshold() == thresholds


async def test_a_cycle_among_frozen_objects_is_freed_by_the_thorough_collection() -> None:
    collector = PacedCollector(period_seconds=0.02, thorough_every=3)
    try:
        collector.start()
        assert await freed(cycle_made_garbage(gc.freeze)), "a frozen cycle was never freed"
    finally:
        await collector.stop()
        gc.unfreeze()


@pytest.mark.parametrize("period", [0.0, -1.0, float("nan")])
def test_the_period_must_be_positive(period: float) -> None:
    with pytest.raises(ValueError, match="period_seconds"):
        PacedCollector(period_seconds=period)


@pytest.mark.parametrize("threshold", [0, -1])
def test_the_young_threshold_must_be_positive(threshold: int) -> None:
    with pytest.raises(ValueError, match="young_threshold"):
        PacedCollector(period_seconds=1.0, young_threshold=threshold)


def test_thorough_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="thorough_every"):
        PacedCollector(period_seconds=1.0, thorough_every=0)
