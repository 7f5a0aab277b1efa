"""The gRPC scaler's mapping rules: snapshot -> value, activity, status code, message.

Pure rules are table-driven; the wiring (registration, warming wait, observer, error
mapping) runs through a real server on loopback port 0 with our generated stubs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import grpc
import pytest

from autoscaler.domain.errors import SpecError
from autoscaler.domain.snapshot import TargetStatus
from autoscaler.domain.types import TargetKey
from autoscaler.services.grpc_scaler import (
    KEDA_CONNECTION_KEYS,
    MAX_ERROR_CHARACTERS,
    ExternalScalerService,
    ScalerServiceSettings,
    TargetResolver,
    is_active,
    pb2,
    pb2_grpc,
    served_replicas,
    target_metadata,
    unavailable_reason,
)
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.rpc import RpcError
from tests.unit.services.fake_engine import FakeEngine, decision, key_and_spec, metadata, target_snapshot

NOW = 1_700_000_000.0


def ref(name: str = "llm", namespace: str = "prod", **changes: str) -> pb2.ScaledObjectRef:
    return pb2.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata(**changes))


# --- served value -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "replicas", "reactive", "expected"),
    [
        ("active", 7, 4, 7),
        ("shadow", 7, 4, 4),
        ("active", 0, 0, 0),
    ],
)
def test_served_replicas_is_the_plan_or_in_shadow_mode_the_reactive_answer(
    mode: str, replicas: int, reactive: int, expected: int
) -> None:
    key, spec = key_and_spec("prod", "llm", metadata(mode=mode, minReplicas="0"))
    snapshot = target_snapshot(key, spec, plan=decision(replicas=replicas, reactive=reactive), now=NOW)
    assert served_replicas(snapshot) == expected


# --- activity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivityCase:
    name: str
    min_replicas: str
    threshold: str
    forecast: float
    history: tuple[float, ...]
    expected: bool
    mode: str = "active"


ACTIVITY = [
    ActivityCase("minReplicas above 0 is always active", "1", "100", 0.0, (0.0,), True),
    ActivityCase("forecast above threshold wakes early", "0", "5", 6.0, (0.0, 0.0), True),
    ActivityCase("latest value above threshold", "0", "5", 0.0, (0.0, 9.0), True),
    ActivityCase("both at the threshold is inactive", "0", "5", 5.0, (5.0,), False),
    ActivityCase("both below the threshold", "0", "5", 1.0, (7.0, 2.0), False),
    ActivityCase("trailing NaN gap uses the last finite value", "0", "5", 0.0, (9.0, float("nan")), True),
    ActivityCase("no history: forecast decides", "0", "0", 0.5, (), True),
    ActivityCase("no history and no demand", "0", "0", 0.0, (), False),
    ActivityCase("shadow ignores the forecast", "0", "5", 50.0, (1.0,), False, "shadow"),
    ActivityCase("shadow follows the latest value", "0", "5", 0.0, (8.0,), True, "shadow"),
]


@pytest.mark.parametrize("case", ACTIVITY, ids=[case.name for case in ACTIVITY])
def test_is_active(case: ActivityCase) -> None:
    raw = metadata(minReplicas=case.min_replicas, activationThreshold=case.threshold, mode=case.mode)
    key, spec = key_and_spec("prod", "llm", raw)
    plan = decision(replicas=0, reactive=0, forecast_at_lead=case.forecast)
    snapshot = target_snapshot(key, spec, plan=plan, history=case.history, now=NOW)
    assert is_active(snapshot) is case.expected


# --- availability -----------------------------------------------------------------------


@dataclass(frozen=True)
class AvailabilityCase:
    name: str
    status: TargetStatus
    has_decision: bool
    sample_age: float | None
    last_error: str | None
    clock_known: bool
    expected: tuple[str, ...] | None  # fragments of the reason; None: servable


AVAILABILITY = [
    AvailabilityCase("ready and fresh", TargetStatus.READY, True, 5.0, None, True, None),
    AvailabilityCase("warming", TargetStatus.WARMING, False, None, None, True, ("warming up",)),
    AvailabilityCase(
        "stale names the age and the bound",
        TargetStatus.STALE,
        True,
        400.0,
        "timeout",
        True,
        ("stale data", "last sample 400s ago", "staleAfter 180s", "last error: timeout"),
    ),
    AvailabilityCase(
        "stale before any sample", TargetStatus.STALE, False, None, None, True, ("no sample collected yet",)
    ),
    AvailabilityCase(
        "error carries the cause",
        TargetStatus.ERROR,
        True,
        30.0,
        "HTTP 503 from default",
        True,
        ("collection is failing", "HTTP 503 from default"),
    ),
    AvailabilityCase("ready without a decision", TargetStatus.READY, False, 5.0, None, True, ("no decision",)),
    AvailabilityCase(
        "ready but the engine stopped publishing",
        TargetStatus.READY,
        True,
        500.0,
        None,
        True,
        ("last sample 500s ago", "not refreshed"),
    ),
    AvailabilityCase("without a clock the status is trusted", TargetStatus.READY, True, 500.0, None, False, None),
]


@pytest.mark.parametrize("case", AVAILABILITY, ids=[case.name for case in AVAILABILITY])
def test_unavailable_reason(case: AvailabilityCase) -> None:
    key, spec = key_and_spec("prod", "llm", metadata())
    snapshot = target_snapshot(key, spec, status=case.status, sample_age=case.sample_age, now=NOW)
    snapshot = replace(snapshot, decision=decision() if case.has_decision else None, last_error=case.last_error)
    # The engine stamps updated_at when it evaluates staleness; a stalled engine leaves it behind.
    if not case.clock_known:
        snapshot = replace(snapshot, updated_at=NOW - 400.0)
    reason = unavailable_reason(snapshot, NOW if case.clock_known else None)
    if case.expected is None:
        assert reason is None
    else:
        assert reason is not None
        for fragment in case.expected:
            assert fragment in reason


def test_no_snapshot_is_unavailable() -> None:
    assert unavailable_reason(None, NOW) == "has no published snapshot yet"


# --- resolution -------------------------------------------------------------------------


def test_keda_connection_keys_are_not_part_of_the_target() -> None:
    resolver = TargetResolver(8)
    plain = resolver.resolve(ref())
    connection = dict.fromkeys(KEDA_CONNECTION_KEYS, "true") | {"scalerAddress": "autoscaler.keda:9100"}
    with_keda_keys = resolver.resolve(ref(**connection))
    assert with_keda_keys.key == plain.key
    assert with_keda_keys.spec == plain.spec


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ({"query": "q", "scalerAddress": "a:9100", "enableTLS": "true"}, {"query": "q"}),
        ({"query": "q", "capacityPerReplicaFromEnv": "8"}, {"query": "q", "capacityPerReplica": "8"}),
        ({"customFromEnv": "x"}, {"customFromEnv": "x"}),  # not a key of ours: parse_spec rejects it by name
    ],
    ids=["connection keys dropped", "FromEnv stands for its key", "unknown FromEnv kept"],
)
def test_target_metadata(forwarded: dict[str, str], expected: dict[str, str]) -> None:
    assert target_metadata(forwarded) == expected


def test_a_key_and_its_from_env_twin_are_ambiguous() -> None:
    with pytest.raises(SpecError) as raised:
        target_metadata({"capacityPerReplica": "8", "capacityPerReplicaFromEnv": "9"})
    assert raised.value.key == "capacityPerReplicaFromEnv"


def test_resolution_is_cached_and_bounded() -> None:
    resolver = TargetResolver(2)
    first = resolver.resolve(ref(name="a"))
    assert resolver.resolve(ref(name="a")) is first
    resolver.resolve(ref(name="b"))
    resolver.resolve(ref(name="c"))
    assert len(resolver) == 2
    assert resolver.resolve(ref(name="a")) is not first  # evicted, parsed again
    assert resolver.resolve(ref(name="a")).key == first.key


def test_the_cache_is_bounded_in_bytes_and_errors_are_cut() -> None:
    """Refused requests near the message limit: the cache keeps digests and cut errors, within its byte budget."""
    resolver = TargetResolver(10_000, max_bytes=16 * 1024)
    for index in range(100):  # each ~30 KiB of metadata in unknown keys, each refused
        hostile = {f"{index}-{key}-" + "k" * 100: "v" * 3000 for key in range(10)}
        with pytest.raises(RpcError) as raised:
            resolver.resolve(pb2.ScaledObjectRef(name="flood", namespace="prod", scalerMetadata=hostile))
        assert len(raised.value.message) <= MAX_ERROR_CHARACTERS + 32
    assert resolver.held_bytes <= 16 * 1024
    assert len(resolver) < 100  # under 1 KiB each: a digest and a cut error, never the request
    long_key = {"k" * 100_000: "v"}
    with pytest.raises(RpcError) as raised:
        resolver.resolve(pb2.ScaledObjectRef(name="long-key", namespace="prod", scalerMetadata=long_key))
    assert "a key of 100000 characters" in raised.value.message
    assert len(raised.value.message) < 300


def test_metadata_over_32_kib_in_all_is_invalid() -> None:
    keys = ["query", "arrivalsQuery", "completionsQuery", "waitingQuery", "runningQuery", "utilizationQuery",
            "podsQuery", "presetSelector", "capacityPerReplica"]  # fmt: skip
    large = pb2.ScaledObjectRef(name="llm", namespace="prod", scalerMetadata={key: "x" * 4000 for key in keys})
    with pytest.raises(RpcError) as raised:
        TargetResolver(8).resolve(large)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "'scalerMetadata': holds 36" in raised.value.message
    assert "at most 32768 allowed" in raised.value.message


def test_a_metric_name_is_quoted_only_in_part() -> None:
    service = ExternalScalerService(FakeEngine())
    request = pb2.GetMetricsRequest(scaledObjectRef=ref(), metricName="m" * 50_000)
    with pytest.raises(RpcError) as raised:
        service.get_metrics(request)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "(50000 characters)" in raised.value.message
    assert len(raised.value.message) < 400


@pytest.mark.parametrize(
    ("request_ref", "fragments"),
    [
        (ref(step="5s"), ("'step'", "between 10s and 1800s", "prod/llm")),
        (ref(targetCoverge="0.9"), ("'targetCoverge'", "unknown key", "prod/llm")),
        (ref(capacityPerReplica="lots"), ("'capacityPerReplica'", "not a number", "prod/llm")),
        (
            ref(capacityPerReplicaFromEnv="3"),
            ("'capacityPerReplicaFromEnv'", "both 'capacityPerReplica' and", "prod/llm"),
        ),
        (ref(name=""), ("ScaledObjectRef.name is empty",)),
        (ref(namespace=""), ("ScaledObjectRef.namespace is empty",)),
    ],
)
def test_bad_references_are_invalid_argument_with_the_key_and_the_object(
    request_ref: pb2.ScaledObjectRef, fragments: tuple[str, ...]
) -> None:
    resolver = TargetResolver(8)
    for _ in range(2):  # the second answer comes from the cache and must say the same
        with pytest.raises(RpcError) as raised:
            resolver.resolve(request_ref)
        assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
        for fragment in fragments:
            assert fragment in raised.value.message


# --- wiring through a real server ---------------------------------------------------------


@dataclass
class Served:
    engine: FakeEngine
    stub: pb2_grpc.ExternalScalerStub
    calls: list[tuple[str, grpc.StatusCode]]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    engine = FakeEngine()
    calls: list[tuple[str, grpc.StatusCode]] = []
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        service_settings=ScalerServiceSettings(warming_wait_seconds=0.3),
        observer=lambda method, code, _seconds: calls.append((method, code)),
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
        yield Served(engine, stub, calls)
    await server.stop(None)


def metrics_request(object_ref: pb2.ScaledObjectRef, metric_name: str) -> pb2.GetMetricsRequest:
    return pb2.GetMetricsRequest(scaledObjectRef=object_ref, metricName=metric_name)


async def first_contact(served: Served, object_ref: pb2.ScaledObjectRef) -> pb2.GetMetricsRequest:
    """GetMetricSpec, as KEDA calls it first; returns the GetMetrics request for the metric it names."""
    metric_name = (await served.stub.GetMetricSpec(object_ref)).metricSpecs[0].metricName
    return metrics_request(object_ref, metric_name)


async def first_contact_then_ready(
    served: Served, object_ref: pb2.ScaledObjectRef
) -> tuple[pb2.GetMetricsRequest, TargetKey]:
    """First contact, then the engine publishes a READY snapshot of the target."""
    request = await first_contact(served, object_ref)
    key, spec = key_and_spec("prod", "llm", dict(object_ref.scalerMetadata))
    served.engine.publish(target_snapshot(key, spec))
    return request, key


async def test_a_target_warming_during_the_wait_is_answered(served: Served) -> None:
    object_ref = ref()
    request = await first_contact(served, object_ref)
    key, spec = key_and_spec("prod", "llm", dict(object_ref.scalerMetadata))

    async def finish_warming() -> None:
        await asyncio.sleep(0.05)
        served.engine.publish(target_snapshot(key, spec, plan=decision(replicas=6)))

    publisher = asyncio.create_task(finish_warming())
    response = await served.stub.GetMetrics(request)
    await publisher
    assert response.metricValues[0].metricValue == 6


async def test_a_target_still_warming_after_the_wait_is_unavailable(served: Served) -> None:
    request = await first_contact(served, ref())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.GetMetrics(request)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "prod/llm" in (raised.value.details() or "")
    assert "warming up" in (raised.value.details() or "")


async def test_first_contact_through_get_metrics_registers(served: Served) -> None:
    object_ref = ref()
    key, _spec = key_and_spec("prod", "llm", dict(object_ref.scalerMetadata))
    with pytest.raises(grpc.aio.AioRpcError):
        await served.stub.IsActive(object_ref)
    assert served.engine.registrations == [key]
    assert served.engine.snapshot().get(key) is not None


async def test_every_call_marks_contact_so_the_engine_keeps_the_target(served: Served) -> None:
    object_ref = ref()
    request, key = await first_contact_then_ready(served, object_ref)
    await served.stub.GetMetrics(request)
    await served.stub.IsActive(object_ref)
    assert served.engine.registrations == [key, key, key]


async def test_unknown_endpoint_is_invalid_argument(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.GetMetricSpec(ref(prometheus="eu-west"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert "'prometheus'" in details
    assert "eu-west" in details
    assert "prod/llm" in details


async def test_too_many_targets_is_resource_exhausted(served: Served) -> None:
    served.engine.max_targets = 0
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.GetMetricSpec(ref())
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_an_engine_failure_is_internal_and_the_server_keeps_serving(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_snapshot() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(served.engine, "snapshot", broken_snapshot)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await served.stub.IsActive(ref())
    assert raised.value.code() is grpc.StatusCode.INTERNAL
    assert "boom" not in (raised.value.details() or "")  # internals stay in the log
    assert "boom" in caplog.text
    monkeypatch.undo()
    assert (await served.stub.GetMetricSpec(ref())).metricSpecs


async def test_observer_sees_every_call_with_its_code(served: Served) -> None:
    object_ref = ref()
    request, _key = await first_contact_then_ready(served, object_ref)
    await served.stub.GetMetrics(request)
    with pytest.raises(grpc.aio.AioRpcError):
        await served.stub.GetMetrics(metrics_request(object_ref, "other"))
    assert served.calls == [
        ("GetMetricSpec", grpc.StatusCode.OK),
        ("GetMetrics", grpc.StatusCode.OK),
        ("GetMetrics", grpc.StatusCode.INVALID_ARGUMENT),
    ]


async def test_a_failing_observer_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken_observer(_method: str, _code: grpc.StatusCode, _seconds: float) -> None:
        raise ValueError("telemetry down")

    server = GrpcServer(FakeEngine(), GrpcServerSettings(host="127.0.0.1", port=0), observer=broken_observer)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
            response = await stub.GetMetricSpec(ref())
        assert response.metricSpecs[0].targetSize == 1
        assert "telemetry down" in caplog.text
    finally:
        await server.stop(None)


@pytest.mark.parametrize(("namespace", "name"), [("ns", "n" * 254), ("n" * 64, "so")])
def test_names_beyond_kubernetes_limits_are_invalid(namespace: str, name: str) -> None:
    ref = pb2.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata={"query": "up", "capacityPerReplica": "1"})
    with pytest.raises(RpcError) as caught:
        TargetResolver(capacity=8).resolve(ref)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than 253/63" in str(caught.value)
