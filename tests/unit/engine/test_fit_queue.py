"""The fit queue: bounded concurrency, blocking refits first, no duplicates, evictions."""

from __future__ import annotations

import pytest

from autoscaler.domain.types import TargetKey
from autoscaler.engine.fit_queue import FitQueue


def key(name: str) -> TargetKey:
    return TargetKey(namespace="ns", name=name, metadata_digest="h")


def drain(queue: FitQueue) -> list[str]:
    started = []
    while (next_key := queue.start_next()) is not None:
        started.append(next_key.name)
    return started


def test_no_more_than_the_concurrency_run_at_once() -> None:
    queue = FitQueue(concurrency=2)
    for name in "abcd":
        queue.request(key(name), blocking=True)
    assert drain(queue) == ["a", "b"]
    assert (queue.running, len(queue)) == (2, 2)
    queue.finished(key("a"))
    assert drain(queue) == ["c"]


def test_refits_that_a_decision_waits_on_go_before_warm_start_replays() -> None:
    queue = FitQueue(concurrency=10)
    queue.request(key("replay-1"), blocking=False)
    queue.request(key("refit"), blocking=True)
    queue.request(key("replay-2"), blocking=False)
    assert drain(queue) == ["refit", "replay-1", "replay-2"]


def test_a_target_waiting_or_running_is_not_queued_twice() -> None:
    queue = FitQueue(concurrency=1)
    queue.request(key("a"), blocking=True)
    queue.request(key("a"), blocking=True)
    assert len(queue) == 1
    assert drain(queue) == ["a"]
    queue.request(key("a"), blocking=True)  # running: nothing to add
    assert queue.is_pending(key("a")) and len(queue) == 0
    queue.finished(key("a"))
    assert not queue.is_pending(key("a"))


def test_a_discarded_target_never_starts() -> None:
    queue = FitQueue(concurrency=5)
    for name in "abc":
        queue.request(key(name), blocking=False)
    queue.discard(key("b"))
    assert drain(queue) == ["a", "c"]


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        FitQueue(concurrency=0)
