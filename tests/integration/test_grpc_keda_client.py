"""Our gRPC server, called by a client compiled from KEDA's own externalscaler.proto.

KEDA's proto comes from the KEDA Go module at test time (see keda_proto.py); when it
cannot be fetched these tests fail, they never skip. The engine behind the server is
a fake at the `EngineView` seam publishing hand-built snapshots.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from autoscaler.domain.snapshot import TargetStatus
from autoscaler.services.grpc_scaler import ScalerServiceSettings
from autoscaler.services.grpc_scaler import pb2 as ours
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.tls import TlsSettings
from tests.integration.grpc_fixtures import Issued, Pki, make_pki
from tests.integration.keda_proto import KEDA_NEWER_VERSION, KedaStubs, keda_stubs
from tests.unit.services.fake_engine import FakeEngine, decision, key_and_spec, metadata, target_snapshot

pytestmark = pytest.mark.timeout(120)

NAMESPACE, NAME = "prod", "llm"
SCALER_ADDRESS = "predictive-autoscaler.keda.svc:9100"
CALL_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def keda(tmp_path_factory: pytest.TempPathFactory) -> KedaStubs:
    return keda_stubs(tmp_path_factory.mktemp("keda-proto"))


@pytest.fixture(scope="module")
def newer_keda(tmp_path_factory: pytest.TempPathFactory) -> KedaStubs:
    return keda_stubs(tmp_path_factory.mktemp("keda-proto-newer"), KEDA_NEWER_VERSION)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def trigger_metadata(**changes: str) -> dict[str, str]:
    """What KEDA sends: the trigger's metadata, its own scalerAddress included."""
    return {"scalerAddress": SCALER_ADDRESS, **metadata(**changes)}


OWN_SUBCHANNELS = [("grpc.use_local_subchannel_pool", 1)]
"""Each test's channel connects afresh: grpc's process-wide subchannel pool would otherwise
hand a new server on a reused port the previous server's "connection refused" backoff."""


@dataclass
class Harness:
    keda: KedaStubs
    engine: FakeEngine
    server: GrpcServer
    channel: grpc.aio.Channel
    calls: list[tuple[str, grpc.StatusCode]] = field(default_factory=list)

    @property
    def stub(self) -> Any:
        return self.keda.services.ExternalScalerStub(self.channel)

    def ref(self, name: str = NAME, namespace: str = NAMESPACE, **changes: str) -> Any:
        return self.keda.messages.ScaledObjectRef(
            name=name, namespace=namespace, scalerMetadata=trigger_metadata(**changes)
        )

    def metrics_request(self, ref: Any, metric_name: str) -> Any:
        return self.keda.messages.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name)

    def publish(self, ref: Any, **snapshot_fields: Any) -> None:
        raw = {key: value for key, value in ref.scalerMetadata.items() if key != "scalerAddress"}
        key, spec = key_and_spec(ref.namespace, ref.name, raw)
        self.engine.publish(target_snapshot(key, spec, **snapshot_fields))

    async def metric_name(self, ref: Any) -> str:
        response = await self.stub.GetMetricSpec(ref, timeout=CALL_TIMEOUT)
        return str(response.metricSpecs[0].metricName)


async def start_server(
    engine: FakeEngine,
    *,
    tls: TlsSettings | None = None,
    service_settings: ScalerServiceSettings | None = None,
    calls: list[tuple[str, grpc.StatusCode]] | None = None,
) -> GrpcServer:
    recorded = calls if calls is not None else []
    server = GrpcServer(
        engine,
        GrpcServerSettings(host="127.0.0.1", port=0, tls=tls),
        service_settings=service_settings or ScalerServiceSettings(warming_wait_seconds=0.2),
        observer=lambda method, code, _seconds: recorded.append((method, code)),
    )
    await server.start()
    return server


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(keda: KedaStubs) -> AsyncIterator[HarnessFactory]:
    started: list[Harness] = []

    async def make(service_settings: ScalerServiceSettings | None = None) -> Harness:
        engine, calls = FakeEngine(), list[tuple[str, grpc.StatusCode]]()
        server = await start_server(engine, service_settings=service_settings, calls=calls)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_SUBCHANNELS)
        harness = Harness(keda, engine, server, channel, calls)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await harness.channel.close()
        await harness.server.stop(None)


@pytest.fixture
async def harness(make_harness: HarnessFactory) -> Harness:
    return await make_harness()


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


# --- the contract -----------------------------------------------------------------------


def _contract(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Everything on the wire: package, messages, fields, services; not file name or options."""
    contract = descriptor_pb2.FileDescriptorProto()
    contract.CopyFrom(file)
    contract.ClearField("name")
    contract.ClearField("options")
    contract.ClearField("source_code_info")
    return contract


def test_our_proto_states_kedas_contract(keda: KedaStubs) -> None:
    theirs, mine = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    keda.messages.DESCRIPTOR.CopyToProto(theirs)
    ours.DESCRIPTOR.CopyToProto(mine)
    assert mine.package == "externalscaler"
    assert _contract(mine) == _contract(theirs)


def test_keda_proto_comes_from_the_pinned_module(keda: KedaStubs) -> None:
    assert f"keda/v2@{keda.version}" in str(keda.proto_file)
    assert keda.proto_file.name == "externalscaler.proto"


def test_a_newer_keda_only_adds_optional_methods(newer_keda: KedaStubs) -> None:
    theirs, mine = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    newer_keda.messages.DESCRIPTOR.CopyToProto(theirs)
    ours.DESCRIPTOR.CopyToProto(mine)
    assert list(theirs.message_type) == list(mine.message_type)
    their_methods = {method.name: method for method in theirs.service[0].method}
    for method in mine.service[0].method:
        assert their_methods.pop(method.name) == method
    assert set(their_methods) == {"StreamMetricSpec"}


async def test_a_newer_keda_client_falls_back_from_stream_metric_spec(
    newer_keda: KedaStubs,
) -> None:
    """KEDA treats UNIMPLEMENTED from StreamMetricSpec as "use GetMetricSpec"; the rest works."""
    engine = FakeEngine()
    server = await start_server(engine)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_SUBCHANNELS) as channel:
            stub = newer_keda.services.ExternalScalerStub(channel)
            ref = newer_keda.messages.ScaledObjectRef(name=NAME, namespace=NAMESPACE, scalerMetadata=trigger_metadata())
            stream = stub.StreamMetricSpec(ref, timeout=CALL_TIMEOUT)
            assert (await rpc_error(stream.read())).code() is grpc.StatusCode.UNIMPLEMENTED
            metric_name = (await stub.GetMetricSpec(ref, timeout=CALL_TIMEOUT)).metricSpecs[0].metricName
            key, spec = key_and_spec(NAMESPACE, NAME, metadata())
            engine.publish(target_snapshot(key, spec, plan=decision(replicas=5)))
            request = newer_keda.messages.GetMetricsRequest(scaledObjectRef=ref, metricName=metric_name)
            response = await stub.GetMetrics(request, timeout=CALL_TIMEOUT)
            assert (response.metricValues[0].metricValue, response.metricValues[0].metricValueFloat) == (5, 5.0)
    finally:
        await server.stop(None)


# --- GetMetricSpec and GetMetrics ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected_name"),
    [({}, None), ({"metricName": "llm-replicas"}, "llm-replicas")],
    ids=["derived name", "metricName key"],
)
async def test_get_metric_spec_names_the_metric_with_a_fixed_target_of_one(
    harness: Harness, changes: dict[str, str], expected_name: str | None
) -> None:
    ref = harness.ref(**changes)
    response = await harness.stub.GetMetricSpec(ref, timeout=CALL_TIMEOUT)
    (spec,) = response.metricSpecs
    if expected_name is None:
        assert spec.metricName.startswith("predicted-replicas-")
    else:
        assert spec.metricName == expected_name
    assert (spec.targetSize, spec.targetSizeFloat) == (1, 1.0)
    assert len(set(harness.engine.registrations)) == 1


@pytest.mark.parametrize(
    ("changes", "plan", "expected"),
    [
        ({}, decision(replicas=7, reactive=4), 7),
        ({"mode": "shadow"}, decision(replicas=7, reactive=4), 4),
        ({"minReplicas": "0"}, decision(replicas=0, reactive=0, forecast_at_lead=0.0), 0),
        ({"maxReplicas": "10000"}, decision(replicas=2500, reactive=2000), 2500),
    ],
    ids=["plan", "shadow serves the reactive answer", "a planned zero", "large"],
)
async def test_get_metrics_serves_the_replicas_in_int_and_float(
    harness: Harness, changes: dict[str, str], plan: Any, expected: int
) -> None:
    ref = harness.ref(**changes)
    metric_name = await harness.metric_name(ref)
    harness.publish(ref, plan=plan)
    response = await harness.stub.GetMetrics(harness.metrics_request(ref, metric_name), timeout=CALL_TIMEOUT)
    (value,) = response.metricValues
    assert value.metricName == metric_name
    assert value.metricValue == expected
    assert value.metricValueFloat == float(expected)


async def test_the_served_value_follows_each_new_plan(harness: Harness) -> None:
    ref = harness.ref()
    metric_name = await harness.metric_name(ref)
    for replicas in (2, 9, 4):
        harness.publish(ref, plan=decision(replicas=replicas, reactive=1))
        response = await harness.stub.GetMetrics(harness.metrics_request(ref, metric_name), timeout=CALL_TIMEOUT)
        assert response.metricValues[0].metricValue == replicas


async def test_an_unknown_metric_name_is_invalid_argument(harness: Harness) -> None:
    ref = harness.ref()
    metric_name = await harness.metric_name(ref)
    harness.publish(ref)
    error = await rpc_error(harness.stub.GetMetrics(harness.metrics_request(ref, "s0-other"), timeout=CALL_TIMEOUT))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "metricName 's0-other'" in (error.details() or "")
    assert metric_name in (error.details() or "")


# --- bad metadata -------------------------------------------------------------------------

BAD_METADATA = [
    ({"capacityPerReplica": ""}, "capacityPerReplica", "is required"),
    ({"capacityPerReplica": "-3"}, "capacityPerReplica", "must be between"),
    ({"preset": "vllm-waiting"}, "query", "exactly one of"),
    ({"leadTime": "soon"}, "leadTime", "not a duration"),
    ({"targetCoverage": "1.5"}, "targetCoverage", "must be between"),
    ({"model": "prophet"}, "model", "not one of"),
    ({"minReplicas": "5", "maxReplicas": "2"}, "maxReplicas", "below minReplicas"),
    ({"mode": "dry-run"}, "mode", "not one of"),
    ({"targetCoverge": "0.9"}, "targetCoverge", "unknown key"),
    ({"prometheus": "eu-west"}, "prometheus", "not configured"),
]


@pytest.mark.parametrize(
    ("changes", "key", "reason"), BAD_METADATA, ids=[f"{key}: {reason}" for _, key, reason in BAD_METADATA]
)
async def test_bad_metadata_is_invalid_argument_naming_the_key(
    harness: Harness, changes: dict[str, str], key: str, reason: str
) -> None:
    ref = harness.ref(**changes)
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "GetMetricSpec": lambda: harness.stub.GetMetricSpec(ref, timeout=CALL_TIMEOUT),
        "GetMetrics": lambda: harness.stub.GetMetrics(harness.metrics_request(ref, "any"), timeout=CALL_TIMEOUT),
        "IsActive": lambda: harness.stub.IsActive(ref, timeout=CALL_TIMEOUT),
    }
    for method, call in calls.items():
        error = await rpc_error(call())
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, method
        details = error.details() or ""
        assert f"'{key}'" in details, (method, details)
        assert reason in details, (method, details)
        assert f"{NAMESPACE}/{NAME}" in details, (method, details)
    assert harness.engine.registrations == []


@pytest.mark.parametrize(("name", "namespace", "missing"), [("", NAMESPACE, "name"), (NAME, "", "namespace")])
async def test_an_empty_object_reference_is_invalid_argument(
    harness: Harness, name: str, namespace: str, missing: str
) -> None:
    error = await rpc_error(harness.stub.GetMetricSpec(harness.ref(name=name, namespace=namespace)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"ScaledObjectRef.{missing} is empty" in (error.details() or "")


# --- no trustworthy data, no guess --------------------------------------------------------

UNTRUSTWORTHY = [
    ("never planned", None, ("warming up",)),
    (
        "stale",
        {"status": TargetStatus.STALE, "sample_age": 600.0, "last_error": "empty result"},
        ("stale data", "last sample 600s ago", "staleAfter 180s", "empty result"),
    ),
    (
        "collection failing",
        {"status": TargetStatus.ERROR, "last_error": "connection refused"},
        ("collection is failing", "connection refused"),
    ),
    ("no decision", {"status": TargetStatus.READY, "without_decision": True}, ("no decision",)),
    ("still warming", {"status": TargetStatus.WARMING, "sample_age": None}, ("warming up",)),
]


@pytest.mark.parametrize(("case", "snapshot_fields", "fragments"), UNTRUSTWORTHY, ids=[c[0] for c in UNTRUSTWORTHY])
async def test_no_trustworthy_data_is_unavailable_never_zero(
    harness: Harness, case: str, snapshot_fields: dict[str, Any] | None, fragments: tuple[str, ...]
) -> None:
    ref = harness.ref()
    metric_name = await harness.metric_name(ref)
    if snapshot_fields is not None:
        harness.publish(ref, **snapshot_fields)
    for call in (
        harness.stub.GetMetrics(harness.metrics_request(ref, metric_name), timeout=CALL_TIMEOUT),
        harness.stub.IsActive(ref, timeout=CALL_TIMEOUT),
    ):
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.UNAVAILABLE, case
        details = error.details() or ""
        assert f"{NAMESPACE}/{NAME}#" in details
        assert metric_name in details
        for fragment in fragments:
            assert fragment in details, (case, details)


async def test_a_target_the_engine_dropped_is_registered_again_and_unavailable(harness: Harness) -> None:
    ref = harness.ref()
    metric_name = await harness.metric_name(ref)
    harness.publish(ref)
    key = next(iter(harness.engine.snapshot().targets))
    harness.engine.drop(key)
    error = await rpc_error(harness.stub.GetMetrics(harness.metrics_request(ref, metric_name), timeout=CALL_TIMEOUT))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "warming up" in (error.details() or "")
    assert harness.engine.snapshot().get(key) is not None


# --- IsActive and StreamIsActive ----------------------------------------------------------


@pytest.mark.parametrize(
    ("forecast", "history", "expected"),
    [(12.0, (0.0,), True), (0.0, (0.0, 11.0), True), (3.0, (4.0,), False)],
    ids=["forecast above threshold", "latest above threshold", "below threshold"],
)
async def test_is_active_compares_demand_with_the_activation_threshold(
    harness: Harness, forecast: float, history: tuple[float, ...], expected: bool
) -> None:
    ref = harness.ref(minReplicas="0", activationThreshold="10")
    harness.publish(ref, plan=decision(replicas=1, reactive=1, forecast_at_lead=forecast), history=history)
    response = await harness.stub.IsActive(ref, timeout=CALL_TIMEOUT)
    assert response.result is expected


async def next_message(stream: Any, timeout: float = 3.0) -> Any:
    return await asyncio.wait_for(stream.read(), timeout)


async def test_stream_sends_the_state_then_each_change(make_harness: HarnessFactory) -> None:
    harness = await make_harness(ScalerServiceSettings(warming_wait_seconds=0.2, stream_resend_seconds=60.0))
    ref = harness.ref(minReplicas="0", activationThreshold="10")

    def demand(value: float) -> None:
        harness.publish(ref, plan=decision(replicas=1, reactive=1, forecast_at_lead=value), history=(value,))

    demand(0.0)
    stream = harness.stub.StreamIsActive(ref)
    assert (await next_message(stream)).result is False
    demand(50.0)
    assert (await next_message(stream)).result is True
    demand(60.0)  # still active: nothing is sent
    demand(1.0)
    assert (await next_message(stream)).result is False
    stream.cancel()
    for _ in range(100):  # the server learns of the cancellation asynchronously
        if ("StreamIsActive", grpc.StatusCode.CANCELLED) in harness.calls:
            break
        await asyncio.sleep(0.05)
    assert ("StreamIsActive", grpc.StatusCode.CANCELLED) in harness.calls


async def test_stream_repeats_an_unchanged_state_periodically(make_harness: HarnessFactory) -> None:
    harness = await make_harness(ScalerServiceSettings(warming_wait_seconds=0.2, stream_resend_seconds=0.2))
    ref = harness.ref()
    harness.publish(ref)
    stream = harness.stub.StreamIsActive(ref)
    started = asyncio.get_running_loop().time()
    results = [(await next_message(stream)).result for _ in range(3)]
    assert results == [True, True, True]
    assert asyncio.get_running_loop().time() - started >= 0.35
    stream.cancel()


async def test_stream_ends_unavailable_when_data_goes_stale(harness: Harness) -> None:
    ref = harness.ref()
    harness.publish(ref)
    stream = harness.stub.StreamIsActive(ref)
    assert (await next_message(stream)).result is True
    harness.publish(ref, status=TargetStatus.STALE, sample_age=900.0)
    error = await rpc_error(next_message(stream))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "stale data" in (error.details() or "")


async def test_stream_on_a_target_that_never_warms_is_unavailable(harness: Harness) -> None:
    stream = harness.stub.StreamIsActive(harness.ref())
    error = await rpc_error(next_message(stream))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


# --- TLS and mTLS -------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsCase:
    name: str
    mutual: bool
    trust: str  # which CA the client trusts: "ca", "other" or "system"
    client: str | None  # which certificate the client presents
    succeeds: bool


TLS_CASES = [
    TlsCase("TLS with the CA", False, "ca", None, True),
    TlsCase("TLS without trusting the CA", False, "system", None, False),
    TlsCase("TLS trusting another CA", False, "other", None, False),
    TlsCase("mTLS with a client certificate", True, "ca", "client", True),
    TlsCase("mTLS without a client certificate", True, "ca", None, False),
    TlsCase("mTLS with a certificate from another CA", True, "ca", "foreign", False),
    TlsCase("mTLS with an expired certificate", True, "ca", "expired", False),
]


def client_credentials(pki: Pki, trust: str, client: str | None) -> grpc.ChannelCredentials:
    roots = {"ca": pki.ca.issued.cert, "other": pki.other_ca.issued.cert, "system": None}[trust]
    issued: Issued | None = {
        None: None,
        "client": pki.client,
        "foreign": pki.foreign_client,
        "expired": pki.expired_client,
    }[client]
    if issued is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=issued.key, certificate_chain=issued.cert)


@pytest.fixture
def system_roots_unset(tmp_path: Path) -> Iterator[None]:
    """Make 'the system roots' an empty bundle, so no host CA can vouch for the test server."""
    empty = tmp_path / "no-roots.pem"
    empty.write_text("")
    previous = os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(empty)
    yield
    if previous is None:
        del os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"]
    else:
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = previous


@pytest.mark.parametrize("case", TLS_CASES, ids=[case.name for case in TLS_CASES])
async def test_tls_handshakes(keda: KedaStubs, pki: Pki, case: TlsCase, system_roots_unset: None) -> None:
    tls = TlsSettings(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca.issued.cert_file if case.mutual else None,
    )
    server = await start_server(FakeEngine(), tls=tls)
    try:
        credentials = client_credentials(pki, case.trust, case.client)
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials, options=OWN_SUBCHANNELS) as channel:
            ref = keda.messages.ScaledObjectRef(name=NAME, namespace=NAMESPACE, scalerMetadata=trigger_metadata())
            call = keda.services.ExternalScalerStub(channel).GetMetricSpec(ref, timeout=CALL_TIMEOUT)
            if case.succeeds:
                assert (await call).metricSpecs[0].targetSize == 1
            else:
                assert (await rpc_error(call)).code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_a_plaintext_client_cannot_talk_to_the_tls_server(keda: KedaStubs, pki: Pki) -> None:
    server = await start_server(FakeEngine(), tls=TlsSettings(pki.server.cert_file, pki.server.key_file))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_SUBCHANNELS) as channel:
            ref = keda.messages.ScaledObjectRef(name=NAME, namespace=NAMESPACE, scalerMetadata=trigger_metadata())
            error = await rpc_error(keda.services.ExternalScalerStub(channel).GetMetricSpec(ref, timeout=CALL_TIMEOUT))
            assert error.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_rotated_certificates_are_served_to_new_connections(keda: KedaStubs, pki: Pki, tmp_path: Path) -> None:
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copyfile(pki.server.cert_file, cert_file)
    shutil.copyfile(pki.server.key_file, key_file)
    server = await start_server(FakeEngine(), tls=TlsSettings(cert_file, key_file))
    ref = keda.messages.ScaledObjectRef(name=NAME, namespace=NAMESPACE, scalerMetadata=trigger_metadata())

    async def handshake(trust: str) -> grpc.StatusCode:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{server.port}", client_credentials(pki, trust, None), options=OWN_SUBCHANNELS
        ) as ch:
            try:
                await keda.services.ExternalScalerStub(ch).GetMetricSpec(ref, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

    try:
        assert await handshake("ca") is grpc.StatusCode.OK
        # What a Secret volume update does: the new pair replaces the old in place.
        shutil.copyfile(pki.other_server.key_file, key_file)
        shutil.copyfile(pki.other_server.cert_file, cert_file)
        assert await handshake("other") is grpc.StatusCode.OK
        assert await handshake("ca") is grpc.StatusCode.UNAVAILABLE
        key_file.write_bytes(b"")  # a rotation caught half written keeps the pair in use
        assert await handshake("other") is grpc.StatusCode.OK
    finally:
        await server.stop(None)


# --- health and reflection ----------------------------------------------------------------


async def test_health_is_serving_then_not_serving_on_shutdown(harness: Harness) -> None:
    health = health_pb2_grpc.HealthStub(harness.channel)

    async def status(service: str) -> int:
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        return int(response.status)

    for service in ("", "externalscaler.ExternalScaler"):
        assert await status(service) == health_pb2.HealthCheckResponse.SERVING
    assert harness.server.serving
    await harness.server.mark_not_serving()
    assert not harness.server.serving
    for service in ("", "externalscaler.ExternalScaler"):
        assert await status(service) == health_pb2.HealthCheckResponse.NOT_SERVING
    # Calls in flight during the grace period are still answered.
    assert (await harness.stub.GetMetricSpec(harness.ref(), timeout=CALL_TIMEOUT)).metricSpecs
    await harness.server.stop(0.5)
    error = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_call_in_flight_during_shutdown_is_answered(make_harness: HarnessFactory) -> None:
    harness = await make_harness(ScalerServiceSettings(warming_wait_seconds=10.0))
    ref = harness.ref()
    metric_name = await harness.metric_name(ref)
    waiting = harness.stub.GetMetrics(harness.metrics_request(ref, metric_name), timeout=CALL_TIMEOUT)
    await asyncio.sleep(0.1)  # the call now waits for the target's first plan
    stopping = asyncio.get_running_loop().create_task(harness.server.stop(5.0))
    await asyncio.sleep(0.1)
    harness.publish(ref, plan=decision(replicas=4, reactive=1))
    assert (await waiting).metricValues[0].metricValue == 4
    await stopping


async def test_reflection_lists_the_services(harness: Harness) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    call = reflection.ServerReflectionInfo(timeout=CALL_TIMEOUT)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    response = await call.read()
    services = {service.name for service in response.list_services_response.service}
    assert {"externalscaler.ExternalScaler", "grpc.health.v1.Health"} <= services
