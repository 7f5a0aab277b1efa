"""The fit pool's workers yield the CPU to the daemon."""

from __future__ import annotations

import os

import pytest

from autoscaler.engine.fit_pool import FIT_NICENESS, SINGLE_THREADED_MATH, FitPool


def test_fit_workers_run_nicer_than_the_daemon() -> None:
    pool = FitPool(max_workers=1)
    try:
        worker_niceness = pool.submit(os.nice, 0).result(timeout=60)
    finally:
        pool.shutdown()
    assert worker_niceness == min(19, os.nice(0) + FIT_NICENESS)


def test_fit_workers_use_one_math_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in SINGLE_THREADED_MATH:
        monkeypatch.delenv(variable, raising=False)
    pool = FitPool(max_workers=1)
    try:
        seen = [pool.submit(os.getenv, variable).result(timeout=60) for variable in SINGLE_THREADED_MATH]
    finally:
        pool.shutdown()
    assert seen == ["1"] * len(SINGLE_THREADED_MATH)
