"""The fit pool's workers yield the CPU to the daemon."""

from __future__ import annotations

import os

import pytest

from autoscaler.engine.fit_pool import FALLBACK_NICENESS, SINGLE_THREADED_MATH, FitPool, lowest_priority


def test_fit_workers_run_at_the_lowest_cpu_priority() -> None:
    pool = FitPool(max_workers=1)
    try:
        worker_policy = pool.submit(os.sched_getscheduler, 0).result(timeout=60)
    finally:
        pool.shutdown()
    assert worker_policy == os.SCHED_IDLE
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the daemon itself keeps its priority


def niceness_where_sched_idle_is_refused() -> int:
    """Run in a worker: `lowest_priority` as under a seccomp profile that refuses SCHED_IDLE."""

    def refuse(*_arguments: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    os.sched_setscheduler = refuse  # this worker process only
    lowest_priority()
    return os.nice(0)


def test_fit_workers_fall_back_to_the_largest_niceness() -> None:
    pool = FitPool(max_workers=1, niceness=0)
    try:
        worker_niceness = pool.submit(niceness_where_sched_idle_is_refused).result(timeout=60)
    finally:
        pool.shutdown()
    assert worker_niceness == FALLBACK_NICENESS


def test_fit_workers_can_run_a_niceness_above_the_daemon() -> None:
    pool = FitPool(max_workers=1, niceness=10)
    try:
        worker_niceness = pool.submit(os.nice, 0).result(timeout=60)
    finally:
        pool.shutdown()
    assert worker_niceness == min(19, os.nice(0) + 10)


def test_fit_workers_use_one_math_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SINGLE_THREADED_MATH:
        monkeypatch.delenv(variable, raising=False)
    pool = FitPool(max_workers=1)
    try:
        seen = [pool.submit(os.getenv, variable).result(timeout=60) for variable in SINGLE_THREADED_MATH]
    finally:
        pool.shutdown()
    assert seen == ["1"] * len(SINGLE_THREADED_MATH)
