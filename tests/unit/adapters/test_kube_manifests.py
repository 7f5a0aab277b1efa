"""The actuator's rules that need no cluster: settings, the PriorityClass check, retries and
the write rate. The manifests themselves: tests/unit/domain/test_placeholders.py."""

from __future__ import annotations

from typing import Any

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from autoscaler.adapters.kube import (
    ActuatorSettings,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeRequestError,
    KubeUnavailableError,
    PriorityClassMismatchError,
    RetryPolicy,
    TokenBucket,
    _check_priority_class,
    call_with_retries,
)
from autoscaler.domain.placeholders import priority_class_manifest

SETTINGS = ActuatorSettings()


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        ({"value": -10, "preemptionPolicy": "Never", "globalDefault": False}, None),
        ({"value": -10, "preemptionPolicy": "Never"}, None),
        ({"value": 0, "preemptionPolicy": "Never"}, "value=0"),
        ({"value": -10}, "preemptionPolicy='PreemptLowerPriority'"),
        ({"value": -10, "preemptionPolicy": "Never", "globalDefault": True}, "globalDefault=True"),
    ],
)
def test_existing_priority_class_checked(found: dict[str, Any], problem: str | None) -> None:
    desired = priority_class_manifest(SETTINGS.placeholder_template)
    if problem is None:
        _check_priority_class("PriorityClass x", found, desired)
        return
    with pytest.raises(PriorityClassMismatchError, match=problem):
        _check_priority_class("PriorityClass x", found, desired)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sometimes"}, "mode"),
        ({"writes_per_minute": 0}, "writes_per_minute"),
        ({"write_burst": 0}, "write_burst"),
        ({"request_timeout_seconds": 0}, "request_timeout_seconds"),
        ({"priority_value": 2_000_000_000}, "priority_value"),
    ],
)
def test_settings_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ActuatorSettings(**kwargs)


# ----------------------------------------------------------------------------- retries and rate


class _Failing:
    """Raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def api_error(status: int, retry_after: str | None = None) -> ApiException:
    exc = ApiException(status=status, reason="test")
    exc.headers = {"Retry-After": retry_after} if retry_after else {}
    return exc


POLICY = RetryPolicy(attempts=3, base_seconds=0.1, max_seconds=1.0)


@pytest.mark.parametrize(
    "error",
    [
        api_error(429),
        api_error(500),
        api_error(503),
        urllib3.exceptions.ProtocolError("reset"),
        ConnectionRefusedError(),
    ],
)
def test_transient_errors_are_retried(error: BaseException) -> None:
    sleeps: list[float] = []
    call = _Failing(error, error)
    assert call_with_retries("op", call, policy=POLICY, sleep=sleeps.append, jitter=lambda: 0.0) == "ok"
    assert call.calls == 3
    assert sleeps == [0.05, 0.1]  # half of the doubling ceiling with zero jitter


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    sleeps: list[float] = []
    call = _Failing(api_error(429, "0.7"), api_error(429, "30"))
    call_with_retries("op", call, policy=POLICY, sleep=sleeps.append, jitter=lambda: 0.0)
    assert sleeps == [0.7, 1.0]


def test_exhausted_retries_raise_unavailable_with_cause() -> None:
    last = api_error(503)
    call = _Failing(api_error(503), api_error(503), last)
    with pytest.raises(KubeUnavailableError, match="op: still failing after 3 attempts") as info:
        call_with_retries("op", call, policy=POLICY, sleep=lambda _: None)
    assert info.value.__cause__ is last


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(403, KubeForbiddenError), (404, KubeNotFoundError), (422, KubeRequestError), (409, KubeRequestError)],
)
def test_permanent_errors_are_not_retried(status: int, error_type: type[KubeRequestError]) -> None:
    call = _Failing(api_error(status))
    with pytest.raises(error_type, match=f"op: HTTP {status}") as info:
        call_with_retries("op", call, policy=POLICY, sleep=lambda _: pytest.fail("must not sleep"))
    assert call.calls == 1
    assert info.value.status == status
    assert isinstance(info.value.__cause__, ApiException)


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [(0, 0.0, 0.05), (0, 0.999, 0.09995), (1, 0.0, 0.1), (3, 0.0, 0.4), (10, 0.0, 0.5), (10, 0.999, 0.9995)],
)
def test_backoff_delay(attempt: int, jitter: float, delay: float) -> None:
    assert POLICY.delay(attempt, retry_after=None, jitter=jitter) == pytest.approx(delay)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate_per_second=0.5, burst=2, now=100.0)
    assert [bucket.try_take(100.0) for _ in range(3)] == [True, True, False]
    assert not bucket.try_take(101.0)  # half a token
    assert bucket.try_take(102.0)
    assert not bucket.try_take(102.0)
    assert bucket.try_take(1000.0)
    assert bucket.try_take(1000.0)  # refilled to burst, never beyond
    assert not bucket.try_take(1000.0)
