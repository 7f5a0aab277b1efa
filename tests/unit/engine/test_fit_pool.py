"""The fit pool's workers yield the CPU to the daemon."""

from __future__ import annotations

import os

from autoscaler.engine.fit_pool import FIT_NICENESS, FitPool


def test_fit_workers_run_nicer_than_the_daemon() -> None:
    pool = FitPool(max_workers=1)
    try:
        worker_niceness = pool.submit(os.nice, 0).result(timeout=60)
    finally:
        pool.shutdown()
    assert worker_niceness == min(19, os.nice(0) + FIT_NICENESS)
