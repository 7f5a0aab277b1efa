"""Polling for e2e tests: the control plane converges, so tests wait for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.25) -> T:
    """Call `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


def exists(read: Callable[[], object]) -> bool:
    """Whether a read of one object finds it: False on 404, any other API error raises."""
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
