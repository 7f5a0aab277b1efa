"""KEDA's ExternalScaler API, answered from the engine's published snapshots.

The metric handed to the HPA is the planned replica count with a fixed AverageValue
target of 1, so the HPA's `ceil(value / target)` arrives at the plan. Handlers only
read snapshots: they never fit a model or query Prometheus, and when the snapshot
holds no trustworthy answer they fail with UNAVAILABLE so that KEDA's fallback
applies, instead of guessing (a 0 would scale the workload down).

docs/grpc.md describes the field mapping, the activity rule and every error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from autoscaler import protogen
from autoscaler.domain.errors import SpecError
from autoscaler.domain.limits import DEFAULT_LIMITS, OperatorLimits, apply_limits
from autoscaler.domain.snapshot import TargetSnapshot, TargetStatus
from autoscaler.domain.spec import KEYS, ScalerSpec, metric_name_for, parse_spec, target_key
from autoscaler.domain.types import FloatArray, TargetKey
from autoscaler.engine.api import EngineView, UnknownEndpointError
from autoscaler.services.admission import NamespaceAdmission
from autoscaler.services.rpc import RpcError, RpcMethod, Writer, shown, truncated

protogen.ensure_generated()
from autoscaler._generated import externalscaler_pb2 as pb2  # noqa: E402
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc  # noqa: E402

__all__ = [
    "KEDA_CONNECTION_KEYS",
    "METRIC_TARGET",
    "SERVICE_NAME",
    "ExternalScalerService",
    "ResolvedTarget",
    "ScalerServiceSettings",
    "TargetResolver",
    "is_active",
    "latest_value",
    "pb2",  # the generated messages, for callers that must not import them before generation
    "pb2_grpc",
    "served_replicas",
    "target_metadata",
    "unavailable_reason",
]

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["ExternalScaler"].full_name

METRIC_TARGET = 1
"""AverageValue target per replica. Fixed: KEDA applies a changed target only when the
ScaledObject itself changes, so the plan is carried by the value alone."""

MAX_OBJECT_NAME = 253
MAX_NAMESPACE_NAME = 63
KEDA_CONNECTION_KEYS = frozenset({"scalerAddress", "enableTLS", "unsafeSsl"})
"""Trigger metadata that configures KEDA's own gRPC client. KEDA forwards the whole
trigger metadata in scalerMetadata, so these arrive with every call; they are not part
of the target's identity or configuration."""

_FROM_ENV = "FromEnv"
_Answer = TypeVar("_Answer")
_SPEC_KEYS = frozenset(key.name for key in KEYS)


@dataclass(frozen=True, slots=True)
class ScalerServiceSettings:
    warming_wait_seconds: float = 2.0
    """How long a call on a WARMING target waits for its first plan before UNAVAILABLE."""
    stream_resend_seconds: float = 30.0
    """StreamIsActive repeats an unchanged answer this often, so dead streams surface."""
    spec_cache_size: int = 16_384
    """Parsed scalerMetadata kept per (namespace, name, metadata); least recently used go first.
    Above the engine's default max_targets (10,000): a fleet polled round-robin must not miss."""
    limits: OperatorLimits = DEFAULT_LIMITS
    """The operator's limits on what scalerMetadata may ask for (the daemon configuration's `limits`)."""
    spec_cache_bytes: int = 32 * 1024 * 1024
    """The same cache's bound in bytes (request digests, error texts, parsed targets), so
    refused requests cannot hold memory that a count of entries would allow; 10,000
    targets' entries take about 20 MiB."""


@dataclass(slots=True, eq=False)
class ResolvedTarget:
    """A ScaledObjectRef after validation: whom the call is about and how it is configured.

    It also keeps the answers built from the last snapshot it served, so the calls in
    one planning step (KEDA polls far more often than the engine plans) reuse them.
    """

    key: TargetKey
    spec: ScalerSpec
    metric_name: str
    _answered: TargetSnapshot | None = field(default=None, repr=False)
    _metrics: pb2.GetMetricsResponse = field(default_factory=pb2.GetMetricsResponse, repr=False)
    _active: pb2.IsActiveResponse = field(default_factory=pb2.IsActiveResponse, repr=False)

    def describe(self) -> str:
        return f"target {self.key} (metric {self.metric_name})"

    def answers(self, snapshot: TargetSnapshot) -> tuple[pb2.GetMetricsResponse, pb2.IsActiveResponse]:
        """GetMetrics' and IsActive's responses for a servable snapshot of this target."""
        if snapshot is not self._answered:
            replicas = served_replicas(snapshot)
            value = pb2.MetricValue(metricName=self.metric_name, metricValue=replicas, metricValueFloat=float(replicas))
            self._metrics = pb2.GetMetricsResponse(metricValues=[value])
            self._active = pb2.IsActiveResponse(result=is_active(snapshot))
            self._answered = snapshot
        return self._metrics, self._active


def served_replicas(snapshot: TargetSnapshot) -> int:
    """The replica count KEDA receives: the plan, or in shadow mode the reactive answer."""
    decision = snapshot.decision
    if decision is None:
        raise ValueError(f"target {snapshot.key} has no decision")
    return decision.reactive_replicas if snapshot.spec.shadow else decision.replicas


def latest_value(values: FloatArray) -> float | None:
    """The most recent finite observation; gaps are stored as NaN."""
    for value in values[::-1]:
        if math.isfinite(value):
            return float(value)
    return None


def is_active(snapshot: TargetSnapshot) -> bool:
    """KEDA's activation (0 <-> 1) answer.

    Active when the planner may never plan zero (minReplicas > 0), or when demand
    exceeds activationThreshold. Demand is the latest observation and, in active mode,
    the forecast at the lead time too, so a workload wakes before its demand arrives.
    Shadow mode answers reactively: the latest observation only.
    """
    spec, decision = snapshot.spec, snapshot.decision
    if decision is None:
        raise ValueError(f"target {snapshot.key} has no decision")
    if spec.min_replicas > 0:
        return True
    demand = [latest_value(snapshot.history_values)]
    if not spec.shadow:
        demand.append(decision.forecast_at_lead)
    return any(value is not None and value > spec.activation_threshold for value in demand)


def unavailable_reason(snapshot: TargetSnapshot | None, now: float | None) -> str | None:
    """Why a snapshot cannot be answered from, or None when it can.

    `now` is the engine clock's time; without it, ages are measured at the snapshot's
    own `updated_at` and an engine that stopped publishing goes unnoticed here.
    """
    if snapshot is None:
        return "has no published snapshot yet"
    stale_after = snapshot.spec.stale_after_seconds
    reference = snapshot.updated_at if now is None else now
    sample_age = None if snapshot.last_sample_at is None else reference - snapshot.last_sample_at
    if (
        snapshot.status is TargetStatus.READY
        and snapshot.decision is not None
        and (sample_age is None or sample_age <= stale_after)
    ):
        return None
    detail = f"; last error: {snapshot.last_error}" if snapshot.last_error else ""
    age_text = "no sample collected yet" if sample_age is None else f"last sample {sample_age:.0f}s ago"
    if snapshot.status is TargetStatus.WARMING:
        return f"is still warming up (first collection and plan not done){detail}"
    if snapshot.status is TargetStatus.STALE:
        return f"has stale data: {age_text}, staleAfter {stale_after:g}s{detail}"
    if snapshot.status is TargetStatus.ERROR:
        return f"has no safe plan: collection is failing{detail}"
    if snapshot.decision is None:
        return f"has no decision yet{detail}"
    # READY with an old sample: the engine marks staleness itself, so it stopped publishing.
    return f"has stale data: {age_text}, staleAfter {stale_after:g}s (snapshot not refreshed){detail}"


def target_metadata(raw: Mapping[str, str]) -> dict[str, str]:
    """The target's own metadata from what KEDA forwards.

    KEDA's connection keys are dropped. A `<key>FromEnv` entry arrives holding the value
    KEDA resolved from the workload's environment, so it stands for `<key>`; setting
    both is ambiguous and an error.
    """
    metadata: dict[str, str] = {}
    for forwarded, value in raw.items():
        if forwarded in KEDA_CONNECTION_KEYS:
            continue
        key = forwarded.removesuffix(_FROM_ENV)
        if key not in _SPEC_KEYS:
            key = forwarded
        elif key != forwarded and key in raw:
            raise SpecError(forwarded, f"both {key!r} and {forwarded!r} are set; use one")
        metadata[key] = value
    return metadata


MAX_ERROR_CHARACTERS = 1024
"""Longest error message kept in the cache and sent back; an error may quote the request."""
RESOLVED_TARGET_BYTES = 2048
"""What one parsed target holds besides its cache key, about: the spec and prebuilt answers."""


class TargetResolver:
    """ScaledObjectRef -> ResolvedTarget, with an LRU bounded in entries and bytes so metadata is parsed once."""

    def __init__(
        self, capacity: int, *, max_bytes: int = 64 * 1024 * 1024, limits: OperatorLimits = DEFAULT_LIMITS
    ) -> None:
        if capacity < 1:
            raise ValueError(f"spec cache capacity must be at least 1, got {capacity}")
        if max_bytes < 1:
            raise ValueError(f"spec cache max_bytes must be at least 1, got {max_bytes}")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._limits = limits
        self._cache: OrderedDict[bytes, ResolvedTarget | str] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def held_bytes(self) -> int:
        """The cache's size as it accounts it: keys, error texts and parsed targets."""
        return self._bytes

    @staticmethod
    def _cost(cache_key: bytes, entry: ResolvedTarget | str) -> int:
        return len(cache_key) + (len(entry) if isinstance(entry, str) else RESOLVED_TARGET_BYTES)

    def _keep(self, cache_key: bytes, entry: ResolvedTarget | str) -> None:
        self._cache[cache_key] = entry
        self._bytes += self._cost(cache_key, entry)
        while len(self._cache) > self._capacity or self._bytes > self._max_bytes:
            evicted_key, evicted = self._cache.popitem(last=False)
            self._bytes -= self._cost(evicted_key, evicted)

    def resolve(self, ref: pb2.ScaledObjectRef) -> ResolvedTarget:
        namespace, name = ref.namespace, ref.name
        if not name:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "ScaledObjectRef.name is empty")
        if not namespace:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"ScaledObjectRef.namespace is empty (name {name!r})")
        # Kubernetes' own limits: a longer name is no ScaledObject, only a way to grow our caches.
        if len(name) > MAX_OBJECT_NAME or len(namespace) > MAX_NAMESPACE_NAME:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"ScaledObjectRef name/namespace longer than {MAX_OBJECT_NAME}/{MAX_NAMESPACE_NAME} characters",
            )
        # Deterministic serialisation orders the map: one C call instead of hashing its items.
        # The key is its digest, so a refused request of 60 KB is not kept whole in the cache
        # (1,000 of them grew the daemon by 80-100 MiB); 128 bits make a collision negligible.
        cache_key = hashlib.blake2b(ref.SerializeToString(deterministic=True), digest_size=16).digest()
        entry = self._cache.get(cache_key)
        if entry is None:
            entry = self._parse(namespace, name, ref.scalerMetadata)
            self._keep(cache_key, entry)
        else:
            self._cache.move_to_end(cache_key)
        if isinstance(entry, str):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, entry)
        return entry

    def _parse(self, namespace: str, name: str, raw: Mapping[str, str]) -> ResolvedTarget | str:
        try:
            metadata = target_metadata(raw)
            spec = apply_limits(parse_spec(metadata), metadata, namespace=namespace, limits=self._limits)
        except SpecError as error:
            return truncated(f"ScaledObject {namespace}/{name}: {error}", MAX_ERROR_CHARACTERS)
        key = target_key(namespace, name, metadata)
        return ResolvedTarget(key=key, spec=spec, metric_name=metric_name_for(key, spec))


class ExternalScalerService:
    """KEDA's ExternalScaler over an `EngineView`, as methods `grpcio_server` turns into handlers."""

    def __init__(
        self,
        engine: EngineView,
        *,
        settings: ScalerServiceSettings | None = None,
        admission: NamespaceAdmission | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """`clock` must read the engine's clock (which dates the samples), e.g. `Clock.now`.

        With it, a READY snapshot whose last sample is older than staleAfter is refused
        even if the engine stopped publishing; without it the snapshot's status is trusted.
        `admission` registers targets (a fair share per namespace); by default over the
        engine's default target cap.
        """
        self._engine = engine
        self._settings = settings or ScalerServiceSettings()
        self._admission = admission or NamespaceAdmission(engine)
        self._clock = clock
        self._resolver = TargetResolver(
            self._settings.spec_cache_size, max_bytes=self._settings.spec_cache_bytes, limits=self._settings.limits
        )
        self._changes = TargetChanges(engine)

    async def close(self) -> None:
        """Stop watching for StreamIsActive's changes (the server cancels the streams themselves)."""
        await self._changes.close()

    def methods(self) -> list[RpcMethod]:
        def method(name: str, request_type: type[Message], **handler: object) -> RpcMethod:
            return RpcMethod(SERVICE_NAME, name, request_type, observed=True, **handler)  # type: ignore[arg-type]

        return [
            method("GetMetricSpec", pb2.ScaledObjectRef, unary=self.get_metric_spec),
            method("GetMetrics", pb2.GetMetricsRequest, unary=self.get_metrics),
            method("IsActive", pb2.ScaledObjectRef, unary=self.is_active),
            method("StreamIsActive", pb2.ScaledObjectRef, server_stream=self.stream_is_active),
        ]

    # --- RPCs: each answers at once, or returns an awaitable when a target is warming ------

    def get_metric_spec(self, ref: pb2.ScaledObjectRef) -> pb2.GetMetricSpecResponse:
        target = self._resolver.resolve(ref)
        self._register(target)
        spec = pb2.MetricSpec(
            metricName=target.metric_name, targetSize=METRIC_TARGET, targetSizeFloat=float(METRIC_TARGET)
        )
        return pb2.GetMetricSpecResponse(metricSpecs=[spec])

    def get_metrics(self, request: pb2.GetMetricsRequest) -> pb2.GetMetricsResponse | Awaitable[pb2.GetMetricsResponse]:
        if not request.HasField("scaledObjectRef"):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "GetMetricsRequest.scaledObjectRef is missing")
        target = self._resolver.resolve(request.scaledObjectRef)
        self._register(target)
        if request.metricName != target.metric_name:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metricName {shown(request.metricName)} is not served for {target.key}; "
                f"GetMetricSpec names {target.metric_name!r}",
            )
        return self._answer(target, lambda snapshot: target.answers(snapshot)[0])

    def is_active(self, ref: pb2.ScaledObjectRef) -> pb2.IsActiveResponse | Awaitable[pb2.IsActiveResponse]:
        target = self._resolver.resolve(ref)
        self._register(target)
        return self._answer(target, lambda snapshot: target.answers(snapshot)[1])

    async def stream_is_active(self, ref: pb2.ScaledObjectRef, write: Writer) -> None:
        """Send the current answer, then each change, and repeat it every resend period.

        The stream wakes only when its own target's snapshot changes (or to resend), so
        many open streams cost nothing while the rest of the fleet is replanned. When
        the target stops being servable the stream ends with UNAVAILABLE; KEDA
        reconnects with backoff and meanwhile relies on its polling fallback.
        """
        target = self._resolver.resolve(ref)
        self._register(target)
        snapshot: TargetSnapshot | None = await self._after_warm_up(target, lambda snapshot: snapshot)
        resend = self._settings.stream_resend_seconds
        sent: bool | None = None
        sent_at = 0.0
        while True:
            self._register(target)  # an open stream is contact too: keeps the target from idling out
            active = is_active(self._require_servable(target, snapshot))
            if active != sent or time.monotonic() - sent_at >= resend:
                await write(pb2.IsActiveResponse(result=active))
                sent, sent_at = active, time.monotonic()
            wait = max(0.0, sent_at + resend - time.monotonic())
            snapshot = await self._changes.wait(target.key, snapshot, wait)

    # --- shared steps -----------------------------------------------------------------

    def _register(self, target: ResolvedTarget) -> None:
        """Register on first contact and mark every later one; the engine evicts idle targets."""
        try:
            self._admission.register(target.key, target.spec)
        except UnknownEndpointError as error:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT, f"ScaledObject {target.key.namespace}/{target.key.name}: {error}"
            ) from error
        except OverflowError as error:  # the engine's bound on targets, or the namespace's fair share
            raise RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{target.describe()}: {error}") from error

    def _answer(
        self, target: ResolvedTarget, build: Callable[[TargetSnapshot], _Answer]
    ) -> _Answer | Awaitable[_Answer]:
        """`build`'s answer from the target's snapshot now, or once it has warmed up."""
        snapshot = self._engine.snapshot().get(target.key)
        if snapshot is None or snapshot.status is TargetStatus.WARMING:
            return self._after_warm_up(target, build)
        return build(self._require_servable(target, snapshot))

    async def _after_warm_up(self, target: ResolvedTarget, build: Callable[[TargetSnapshot], _Answer]) -> _Answer:
        """Wait a bounded time for the target's first plan (it is registered already)."""
        waited = await self._engine.wait_for_target(target.key, self._settings.warming_wait_seconds)
        snapshot = waited or self._engine.snapshot().get(target.key)
        return build(self._require_servable(target, snapshot))

    def _require_servable(self, target: ResolvedTarget, snapshot: TargetSnapshot | None) -> TargetSnapshot:
        reason = unavailable_reason(snapshot, None if self._clock is None else self._clock())
        if reason is not None or snapshot is None:
            raise RpcError(grpc.StatusCode.UNAVAILABLE, f"{target.describe()} {reason}")
        return snapshot


class TargetChanges:
    """Wakes a waiter when its target's published snapshot changes; one engine watcher for all.

    The engine publishes a new generation whenever any target changes; a snapshot object
    that did not change is carried over as the same object, so comparing identities per
    watched target finds the changes without waking every stream for every publish.
    """

    def __init__(self, engine: EngineView) -> None:
        self._engine = engine
        self._waiters: dict[TargetKey, set[asyncio.Event]] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self, key: TargetKey, seen: TargetSnapshot | None, timeout: float) -> TargetSnapshot | None:
        """The target's snapshot once it is no longer `seen`, or its current one after `timeout`."""
        current = self._engine.snapshot().get(key)
        if current is not seen:
            return current
        changed = asyncio.Event()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(changed)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(key, None)
        return self._engine.snapshot().get(key)

    async def _watch(self) -> None:
        previous = self._engine.snapshot()
        while self._waiters:
            # Bounded, so the watcher ends soon after its last waiter leaves.
            current = await self._engine.wait_next(previous.generation, 1.0)
            if current.generation == previous.generation:
                continue
            for key, waiters in self._waiters.items():
                if current.get(key) is not previous.get(key):
                    for changed in waiters:
                        changed.set()
            previous = current

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
