"""The node-buffer actuator: placeholder pods (or a CapacityBuffer) sized by the plan.

Placeholders are pause pods that request what one serving pod requests, at a priority
below every real pod and with `preemptionPolicy: Never`: the scheduler evicts them the
moment a serving pod needs their room, and the evicted ones go Pending, which is what
makes the cluster autoscaler (or Karpenter) add a node ahead of demand.

Every write is a server-side apply of the whole object we own (never a partial spec),
skipped when the object already matches, paced by a token bucket per target group,
retried with backoff on 429, 5xx and connection errors, and preceded by a check that
the caller may still write (the leader lease). The client is synchronous; the async
loop calls it through `asyncio.to_thread`.

The objects themselves, and the rule that tells whether the server already holds
them, are pure and live in `autoscaler.domain.placeholders`; this module does the I/O.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from autoscaler.adapters import capacity_buffer
from autoscaler.domain.placeholders import (
    CAPACITY_BUFFER_GROUP,
    CAPACITY_BUFFER_KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PlaceholderGroup,
    PlaceholderTemplate,
    PodTemplateError,
    QuantityParser,
    buffer_object,
    matches,
    placeholder_deployment,
    priority_class_manifest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Mode = Literal["auto", "placeholders", "capacitybuffer"]
ApplyAction = Literal["unchanged", "created", "updated", "throttled"]

APPLY_PATCH = "application/apply-patch+yaml"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_parse_quantity: QuantityParser = parse_quantity  # the client's parser carries no annotations


# ----------------------------------------------------------------------------- errors


class KubeActuatorError(RuntimeError):
    """Base of every error the actuator raises; the cause is chained."""


class KubeUnavailableError(KubeActuatorError):
    """The API server kept failing transiently (429, 5xx, connection) until retries ran out."""


class KubeRequestError(KubeActuatorError):
    """The API server refused a request for good (4xx other than 429)."""

    def __init__(self, what: str, status: int, reason: str) -> None:
        super().__init__(f"{what}: HTTP {status} {reason}")
        self.status = status


class KubeForbiddenError(KubeRequestError):
    """RBAC denied the request: the daemon's role lacks a verb it needs."""


class KubeNotFoundError(KubeRequestError):
    """The object does not exist."""


class WorkloadNotFoundError(KubeActuatorError):
    """The target's `workloadName` names no Deployment in its namespace."""


class WorkloadShapeError(KubeActuatorError):
    """The workload's pod template cannot be copied (no containers, bad quantity); the
    core's `PodTemplateError` is the cause."""


class OwnershipError(KubeActuatorError):
    """An object with the placeholder's name exists but is not managed by us."""


class PriorityClassMismatchError(KubeActuatorError):
    """The placeholder PriorityClass exists with other immutable fields (value, policy)."""


class CapacityBufferUnavailableError(KubeActuatorError):
    """Mode `capacitybuffer` was asked for but the cluster does not serve the API."""


class LeadershipLostError(KubeActuatorError):
    """The write guard said no: this replica no longer holds a fresh lease."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is honoured up to the cap."""

    attempts: int = 4
    base_seconds: float = 0.2
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be at least 1")
        if not 0 < self.base_seconds <= self.max_seconds:
            raise ValueError("retry delays need 0 < base_seconds <= max_seconds")

    def delay(self, attempt: int, *, retry_after: float | None, jitter: float) -> float:
        """Seconds to wait before retry number `attempt` (0-based); `jitter` is in [0, 1)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2.0**attempt)
        backoff = ceiling * (0.5 + jitter / 2.0)
        if retry_after is not None:
            return max(backoff, min(retry_after, self.max_seconds))
        return backoff


@dataclass(frozen=True, slots=True)
class ActuatorSettings:
    mode: Mode = "placeholders"
    priority_class_name: str = "predictive-autoscaler-placeholder"
    # The cluster autoscaler treats pods below -10 as expendable and never scales up
    # for them; -10 is the lowest value that still makes it add nodes.
    priority_value: int = -10
    image: str = "registry.k8s.io/pause:3.10"
    field_manager: str = "predictive-autoscaler"
    writes_per_minute: float = 6.0
    write_burst: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout_seconds: float = 10.0
    discovery_ttl_seconds: float = 300.0

    @property
    def placeholder_template(self) -> PlaceholderTemplate:
        return PlaceholderTemplate(
            priority_class_name=self.priority_class_name,
            priority_value=self.priority_value,
            image=self.image,
            parse_quantity=_parse_quantity,
        )

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "placeholders", "capacitybuffer"):
            raise ValueError(f"mode {self.mode!r} is not one of auto, placeholders, capacitybuffer")
        if self.writes_per_minute <= 0 or self.write_burst < 1:
            raise ValueError("writes_per_minute must be positive and write_burst at least 1")
        if self.request_timeout_seconds <= 0:
            raise ValueError("request_timeout_seconds must be positive")
        if not -(2**31) <= self.priority_value <= 10**9:
            raise ValueError("priority_value must be a user priority (at most 1000000000)")


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    action: ApplyAction
    kind: str
    name: str
    replicas: int


# ----------------------------------------------------------------------------- calls


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES or not exc.status
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(str(headers.get("Retry-After")))
    except ValueError:
        return None


def _request_error(what: str, exc: ApiException) -> KubeRequestError:
    status, reason = int(exc.status or 0), str(exc.reason or "")
    if status == 403:
        return KubeForbiddenError(what, status, reason)
    if status == 404:
        return KubeNotFoundError(what, status, reason)
    return KubeRequestError(what, status, reason)


def call_with_retries(
    what: str,
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Run `call`, retrying transient failures; map the rest to the actuator's errors."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except ApiException as exc:
            if not is_transient(exc):
                raise _request_error(what, exc) from exc
            last: BaseException = exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            last = exc
        if attempt + 1 < policy.attempts:
            delay = policy.delay(attempt, retry_after=_retry_after(last), jitter=jitter())
            log.warning("kube_retry what=%r attempt=%d delay_s=%.2f error=%r", what, attempt + 1, delay, last)
            sleep(delay)
    raise KubeUnavailableError(f"{what}: still failing after {policy.attempts} attempts: {last!r}") from last


class TokenBucket:
    """At most `burst` writes at once, refilled at `rate_per_second`."""

    def __init__(self, *, rate_per_second: float, burst: int, now: float) -> None:
        self._rate = rate_per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def try_take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


# ----------------------------------------------------------------------------- actuator


def _always() -> bool:
    return True


class KubeActuator:
    """Applies one buffer size per placeholder group. Synchronous and not re-entrant."""

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: ActuatorSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api_client
        self.settings = settings or ActuatorSettings()
        self._monotonic = monotonic
        self._sleep = sleep
        self._apps = client.AppsV1Api(api_client)
        self._scheduling = client.SchedulingV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._buckets: dict[PlaceholderGroup, TokenBucket] = {}
        self._discovered: tuple[float, str | None] | None = None

    # -- public

    def resolved_mode(self) -> Literal["placeholders", "capacitybuffer"]:
        """The mode in force: `auto` becomes capacitybuffer only where the API is served."""
        mode = self.settings.mode
        if mode == "placeholders":
            return "placeholders"
        version = self.capacity_buffer_version()
        if version is None:
            if mode == "capacitybuffer":
                raise CapacityBufferUnavailableError(
                    f"mode 'capacitybuffer': the API server does not serve {capacity_buffer.PLURAL}."
                    f"{CAPACITY_BUFFER_GROUP} (versions {', '.join(capacity_buffer.KNOWN_VERSIONS)})"
                )
            return "placeholders"
        return "capacitybuffer"

    def capacity_buffer_version(self) -> str | None:
        """Discovered CapacityBuffer version, cached for `discovery_ttl_seconds`."""
        now = self._monotonic()
        if self._discovered is None or now - self._discovered[0] >= self.settings.discovery_ttl_seconds:
            version = self._call(
                "discover CapacityBuffer API",
                lambda: capacity_buffer.served_version(
                    self._api, timeout_seconds=self.settings.request_timeout_seconds
                ),
            )
            self._discovered = (now, version)
        return self._discovered[1]

    def apply_buffer(
        self, group: PlaceholderGroup, replicas: int, *, may_write: Callable[[], bool] = _always
    ) -> ApplyOutcome:
        """Make the group's buffer hold `replicas` pods; no write when it already does.

        `may_write` is asked right before every write request; when it says no the
        call raises LeadershipLostError and nothing is written.
        """
        if replicas < 0:
            raise ValueError(f"{group}: buffer replicas must be >= 0, got {replicas}")
        workload = self._read_workload(group)
        if self.resolved_mode() == "capacitybuffer":
            return self._apply_capacity_buffer(group, replicas, may_write)
        try:
            desired = placeholder_deployment(workload, replicas=replicas, template=self.settings.placeholder_template)
        except PodTemplateError as exc:
            raise WorkloadShapeError(str(exc)) from exc
        name = desired["metadata"]["name"]
        current = self._read_optional(
            f"read Deployment {group.namespace}/{name}",
            lambda: self._apps.read_namespaced_deployment(name, group.namespace, **self._raw),
        )

        def write() -> object:
            return self._apps.patch_namespaced_deployment(
                name, group.namespace, desired, field_manager=self.settings.field_manager, force=True,
                _content_type=APPLY_PATCH, _request_timeout=self._timeout,
            )  # fmt: skip

        return self._reconcile(
            group,
            "Deployment",
            current=current,
            desired=desired,
            write=write,
            may_write=may_write,
            prepare=self._ensure_priority_class,
        )

    # -- internals

    @property
    def _timeout(self) -> float:
        return self.settings.request_timeout_seconds

    @property
    def _raw(self) -> dict[str, Any]:
        return {"_request_timeout": self._timeout, "_preload_content": False}

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return call_with_retries(what, call, policy=self.settings.retry, sleep=self._sleep)

    def _guarded(self, what: str, may_write: Callable[[], bool], call: Callable[[], T]) -> T:
        def attempt() -> T:
            # Asked again before each retry: a lease may lapse while we back off.
            if not may_write():
                raise LeadershipLostError(f"{what}: not written, this replica no longer holds the lease")
            return call()

        return self._call(what, attempt)

    def _read_optional(self, what: str, call: Callable[[], Any]) -> dict[str, Any] | None:
        """The object as the server's own JSON, or None when it does not exist.

        `call` must pass `_preload_content=False`: the raw JSON keeps every field, even
        ones newer than this client's models, so copied pod fields are never dropped.
        """
        try:
            response = self._call(what, call)
        except KubeNotFoundError:
            return None
        try:
            body: dict[str, Any] = json.loads(response.data)
        except (ValueError, AttributeError) as exc:
            raise KubeActuatorError(f"{what}: the response is not a JSON object") from exc
        return body

    def _read_workload(self, group: PlaceholderGroup) -> dict[str, Any]:
        workload = self._read_optional(
            f"read workload Deployment {group}",
            lambda: self._apps.read_namespaced_deployment(group.workload_name, group.namespace, **self._raw),
        )
        if workload is None:
            raise WorkloadNotFoundError(f"workloadName {group.workload_name!r}: no Deployment {group}")
        return workload

    def _reconcile(
        self,
        group: PlaceholderGroup,
        kind: str,
        *,
        current: Mapping[str, Any] | None,
        desired: dict[str, Any],
        write: Callable[[], object],
        may_write: Callable[[], bool],
        prepare: Callable[[Callable[[], bool]], None] | None = None,
    ) -> ApplyOutcome:
        name = desired["metadata"]["name"]
        replicas = int(desired["spec"]["replicas"])
        if current is not None:
            labels = (current.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                raise OwnershipError(
                    f"{kind} {group.namespace}/{name} exists and is not labelled "
                    f"{MANAGED_BY_LABEL}={MANAGED_BY}; refusing to take it over"
                )
            if matches(current, desired, parse_quantity=_parse_quantity):
                return ApplyOutcome("unchanged", kind, name, replicas)
        bucket = self._buckets.get(group)
        if bucket is None:
            bucket = TokenBucket(
                rate_per_second=self.settings.writes_per_minute / 60.0,
                burst=self.settings.write_burst,
                now=self._monotonic(),
            )
            self._buckets[group] = bucket
        if not bucket.try_take(self._monotonic()):
            return ApplyOutcome("throttled", kind, name, replicas)
        if prepare is not None:
            prepare(may_write)
        self._guarded(f"apply {kind} {group.namespace}/{name}", may_write, write)
        return ApplyOutcome("created" if current is None else "updated", kind, name, replicas)

    def _apply_capacity_buffer(
        self, group: PlaceholderGroup, replicas: int, may_write: Callable[[], bool]
    ) -> ApplyOutcome:
        version = self.capacity_buffer_version()
        if version is None:
            raise CapacityBufferUnavailableError(f"{group}: CapacityBuffer API no longer served")
        desired = buffer_object(group, replicas=replicas, version=version)
        name = desired["metadata"]["name"]
        args = (CAPACITY_BUFFER_GROUP, version, group.namespace, capacity_buffer.PLURAL, name)
        current = self._read_optional(
            f"read CapacityBuffer {group.namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(*args, **self._raw),
        )

        def write() -> object:
            return self._custom.patch_namespaced_custom_object(
                *args, desired, field_manager=self.settings.field_manager, force=True,
                _content_type=APPLY_PATCH, _request_timeout=self._timeout,
            )  # fmt: skip

        return self._reconcile(
            group, CAPACITY_BUFFER_KIND, current=current, desired=desired, write=write, may_write=may_write
        )

    def _ensure_priority_class(self, may_write: Callable[[], bool]) -> None:
        """Create the placeholder PriorityClass if missing; refuse one with other immutable fields."""
        desired = priority_class_manifest(self.settings.placeholder_template)
        name = self.settings.priority_class_name
        what = f"PriorityClass {name}"
        current = self._read_optional(f"read {what}", lambda: self._scheduling.read_priority_class(name, **self._raw))
        if current is None:
            try:
                self._guarded(
                    f"create {what}",
                    may_write,
                    lambda: self._scheduling.create_priority_class(
                        client.V1PriorityClass.model_validate(desired), _request_timeout=self._timeout
                    ),
                )
                log.info("priority_class_created name=%s value=%d", name, self.settings.priority_value)
                return
            except KubeRequestError as exc:
                if exc.status != 409:  # created concurrently: verify it below
                    raise
            current = self._read_optional(
                f"read {what}", lambda: self._scheduling.read_priority_class(name, **self._raw)
            )
            if current is None:
                raise KubeActuatorError(f"{what}: reported as existing, then not found")
        _check_priority_class(what, current, desired)


def _check_priority_class(what: str, current: Mapping[str, Any], desired: Mapping[str, Any]) -> None:
    # value and preemptionPolicy are immutable, so a mismatch cannot be repaired by a write.
    found = {
        "value": current.get("value"),
        "preemptionPolicy": current.get("preemptionPolicy") or "PreemptLowerPriority",
        "globalDefault": bool(current.get("globalDefault")),
    }
    wanted = {key: desired[key] for key in found}
    wrong = [f"{key}={found[key]!r} (want {wanted[key]!r})" for key in found if found[key] != wanted[key]]
    if wrong:
        raise PriorityClassMismatchError(f"{what} exists with {', '.join(wrong)}; delete it or configure another name")
