"""Operator limits: the pure check as a table, then through a real gRPC server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.domain.errors import SpecError
from autoscaler.domain.limits import DEFAULT_LIMITS, OperatorLimits, Tenancy, apply_limits, share_buffer_total
from autoscaler.domain.signals import SignalKind
from autoscaler.domain.spec import ScalerSpec, parse_spec, target_key
from autoscaler.services.grpc_scaler import ScalerServiceSettings, pb2, pb2_grpc
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from tests.unit.services.fake_engine import FakeEngine

QUERY = "sum(rate(vllm:request_success_total[1m]))"
BASE = {"query": QUERY, "capacityPerReplica": "10"}
PRESET = {"preset": "vllm-waiting", "presetSelector": 'model_name="m1"', "capacityPerReplica": "10"}
LISTED = OperatorLimits(placeholder_namespaces=frozenset({"llm"}))
PRESETS_ONLY = OperatorLimits(allow_custom_queries=False)


def check(metadata: Mapping[str, str], namespace: str, limits: OperatorLimits) -> ScalerSpec:
    return apply_limits(parse_spec(metadata), metadata, namespace=namespace, limits=limits)


@pytest.mark.parametrize(
    ("metadata", "namespace", "limits", "key", "fragment"),
    [
        # placeholders: only in a listed namespace (none by default)
        ({**BASE, "workloadName": "vllm"}, "llm", DEFAULT_LIMITS, "maxBufferReplicas", "limits.placeholderNamespaces"),
        ({**BASE, "workloadName": "vllm"}, "web", LISTED, "maxBufferReplicas", "namespace 'web'"),
        # buffer replicas per target
        ({**BASE, "maxBufferReplicas": "17"}, "llm", DEFAULT_LIMITS, "maxBufferReplicas", "= 16"),
        (
            {**BASE, "maxBufferReplicas": "5"},
            "llm",
            OperatorLimits(max_buffer_replicas_per_target=4),
            "maxBufferReplicas",
            "5 is above the operator's limit limits.maxBufferReplicasPerTarget = 4",
        ),
        # custom PromQL when only presets are allowed: each key that carries PromQL
        (BASE, "llm", PRESETS_ONLY, "query", "limits.allowCustomQueries is false"),
        (
            {"arrivalsQuery": QUERY, "capacityPerReplica": "10"},
            "llm",
            PRESETS_ONLY,
            "arrivalsQuery",
            "custom PromQL is not allowed",
        ),
        (
            {**PRESET, "replicaSource": "prometheus", "replicasQuery": "sum(kube_deployment_status_replicas_ready)"},
            "llm",
            PRESETS_ONLY,
            "replicasQuery",
            "custom PromQL is not allowed",
        ),
        # tenancy: a query that cannot be confined is refused on its key
        (
            {**BASE, "query": 'sum(foo{job="a\\"b"})'},
            "llm",
            OperatorLimits(tenancy=Tenancy.NAMESPACE),
            "query",
            "limits.tenancy is namespace",
        ),
    ],
)
def test_asking_for_more_than_the_limits_names_the_key_and_the_limit(
    metadata: Mapping[str, str], namespace: str, limits: OperatorLimits, key: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as caught:
        check(metadata, namespace, limits)
    assert caught.value.key == key
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("metadata", "namespace", "limits"),
    [
        (BASE, "web", DEFAULT_LIMITS),  # no workloadName: no placeholders
        ({**BASE, "workloadName": "vllm", "maxBufferReplicas": "0"}, "web", DEFAULT_LIMITS),  # buffer off
        ({**BASE, "workloadName": "vllm"}, "llm", LISTED),
        # the actuator is off: nothing is written, so the namespace list does not bind
        ({**BASE, "workloadName": "vllm"}, "web", OperatorLimits(placeholders_written=False)),
        ({**BASE, "maxBufferReplicas": "16"}, "llm", DEFAULT_LIMITS),
        (PRESET, "llm", PRESETS_ONLY),
    ],
)
def test_within_the_limits_the_spec_is_unchanged(
    metadata: Mapping[str, str], namespace: str, limits: OperatorLimits
) -> None:
    spec = parse_spec(metadata)
    assert apply_limits(spec, metadata, namespace=namespace, limits=limits) == spec


def test_tenancy_confines_every_query_of_the_spec() -> None:
    metadata = {
        **PRESET,
        "presetSelector": 'model_name="m1",namespace="other"',
        "replicaSource": "prometheus",
        "replicasQuery": 'sum(kube_deployment_status_replicas_ready{deployment="vllm"})',
    }
    spec = check(metadata, "llm", OperatorLimits(tenancy=Tenancy.NAMESPACE))
    queries = [signal.query for signal in spec.signals]
    assert queries and all('namespace="llm"' in query and "other" not in query for query in queries)
    assert spec.query in queries
    assert spec.replicas_query == 'sum(kube_deployment_status_replicas_ready{deployment="vllm",namespace="llm"})'


def test_tenancy_keeps_each_custom_signal_in_its_kind() -> None:
    metadata = {"arrivalsQuery": "sum(rate(a[1m]))", "waitingQuery": "sum(w)", "capacityPerReplica": "10"}
    spec = check(metadata, "llm", OperatorLimits(tenancy=Tenancy.NAMESPACE))
    assert {signal.kind: signal.query for signal in spec.signals} == {
        SignalKind.ARRIVALS: 'sum(rate(a{namespace="llm"}[1m]))',
        SignalKind.WAITING: 'sum(w{namespace="llm"})',
    }
    assert spec.query == 'sum(rate(a{namespace="llm"}[1m]))'


# --- the daemon-wide total ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "total", "expected"),
    [
        ({"a": 3, "b": 4}, 10, {"a": 3, "b": 4}),
        ({"a": 10, "b": 10}, 10, {"a": 5, "b": 5}),
        ({"a": 2, "b": 10, "c": 10}, 12, {"a": 2, "b": 5, "c": 5}),
        ({"a": 1, "b": 2, "c": 30}, 9, {"a": 1, "b": 2, "c": 6}),
        ({"a": 10, "b": 10, "c": 10}, 10, {"a": 4, "b": 3, "c": 3}),
        ({"a": 10, "b": 0}, 0, {"a": 0, "b": 0}),
        ({}, 5, {}),
    ],
)
def test_buffers_above_the_total_get_a_fair_share(wanted: dict[str, int], total: int, expected: dict[str, int]) -> None:
    assert share_buffer_total(wanted, total) == expected


@given(
    wanted=st.dictionaries(st.text(min_size=1, max_size=3), st.integers(0, 10_000), max_size=30),
    total=st.integers(0, 20_000),
)
def test_shares_stay_within_the_total_and_what_was_asked(wanted: dict[str, int], total: int) -> None:
    shares = share_buffer_total(wanted, total)
    assert list(shares) == list(wanted)
    assert all(0 <= shares[group] <= wanted[group] for group in wanted)
    assert sum(shares.values()) == min(total, sum(wanted.values()))


# --- through the gRPC server: INVALID_ARGUMENT naming the key and the limit -----------------


@pytest.fixture
async def stub() -> AsyncIterator[tuple[pb2_grpc.ExternalScalerStub, FakeEngine]]:
    engine = FakeEngine()
    limits = OperatorLimits(
        placeholder_namespaces=frozenset({"llm"}),
        max_buffer_replicas_per_target=8,
        allow_custom_queries=False,
        tenancy=Tenancy.NAMESPACE,
    )
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0),
        service_settings=ScalerServiceSettings(warming_wait_seconds=0.1, limits=limits),
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb2_grpc.ExternalScalerStub(channel), engine  # type: ignore[no-untyped-call]
    await server.stop(None)


@pytest.mark.parametrize(
    ("namespace", "metadata", "expected"),
    [
        (
            "web",
            {**PRESET, "workloadName": "vllm"},
            "'maxBufferReplicas': placeholders may not be written",
        ),
        ("llm", {**PRESET, "maxBufferReplicas": "9"}, "limits.maxBufferReplicasPerTarget = 8"),
        ("llm", BASE, "'query': custom PromQL is not allowed (the operator's limits.allowCustomQueries is false)"),
    ],
)
async def test_grpc_answers_invalid_argument(
    stub: tuple[pb2_grpc.ExternalScalerStub, FakeEngine], namespace: str, metadata: dict[str, str], expected: str
) -> None:
    client, engine = stub
    ref = pb2.ScaledObjectRef(name="chat", namespace=namespace, scalerMetadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.GetMetricSpec(ref)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (raised.value.details() or "")
    assert f"{namespace}/chat" in (raised.value.details() or "")
    assert engine.registrations == []


async def test_grpc_registers_the_confined_spec(stub: tuple[pb2_grpc.ExternalScalerStub, FakeEngine]) -> None:
    client, engine = stub
    metadata = {**PRESET, "workloadName": "vllm", "maxBufferReplicas": "8"}
    await client.GetMetricSpec(pb2.ScaledObjectRef(name="chat", namespace="llm", scalerMetadata=metadata))
    registered = engine.snapshot().get(target_key("llm", "chat", metadata))
    assert registered is not None
    assert registered.spec.signals
    assert all('namespace="llm"' in signal.query for signal in registered.spec.signals)
