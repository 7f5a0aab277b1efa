"""Hostile KEDA calls: arbitrary ScaledObjectRef and GetMetricsRequest messages on a real server.

The server (`GrpcServer` over the fake engine) runs on its own event loop in a thread,
so hypothesis drives it with a blocking client. Every answer must be OK or a status
that tells the caller what to fix or to retry; INTERNAL would mean an unhandled error
in our code, and a hang would stall KEDA's operator.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from autoscaler.domain.spec import KEYS, MAX_METADATA_VALUE
from autoscaler.services.grpc_scaler import ScalerServiceSettings
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from tests.unit.services.fake_engine import BASE_METADATA, FakeEngine

ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
CALL_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_BYTES = 64 * 1024
KEY_NAMES = [key.name for key in KEYS]
# Text without lone surrogates: protobuf strings must be valid UTF-8 on the wire.
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
METADATA = st.one_of(
    st.dictionaries(TEXT, TEXT, max_size=6),
    st.dictionaries(st.sampled_from([*KEY_NAMES, "scalerAddress", "queryFromEnv", "stepFromEnv"]), TEXT, max_size=8),
    st.dictionaries(st.sampled_from(KEY_NAMES), TEXT, max_size=4).map(lambda extra: {**BASE_METADATA, **extra}),
)
REFS = st.builds(
    pb2.ScaledObjectRef,
    name=st.one_of(TEXT, st.just("chat")),
    namespace=st.one_of(TEXT, st.just("llm")),
    scalerMetadata=METADATA,
)


class ServerThread:
    """A started GrpcServer on a private loop; `stop` shuts it down in order."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-fuzz", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> int:
        self.engine = FakeEngine()
        self.engine.max_targets = 200
        self.server = GrpcServer(
            self.engine,
            GrpcServerSettings(host="127.0.0.1", port=0, max_receive_message_bytes=MAX_MESSAGE_BYTES),
            service_settings=ScalerServiceSettings(warming_wait_seconds=0.01, spec_cache_size=64),
        )
        return await self.server.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = ServerThread()
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
        yield channel
    server.stop()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb2_grpc.ExternalScalerStub:
    return pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]


def status_of(call: object, request: object) -> grpc.StatusCode:
    try:
        call(request, timeout=CALL_TIMEOUT_SECONDS)  # type: ignore[operator]
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        assert code in ALLOWED, f"{code}: {error.details()}"
        assert code is not grpc.StatusCode.DEADLINE_EXCEEDED
        return code
    return grpc.StatusCode.OK


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=REFS)
def test_arbitrary_refs_get_a_precise_status(stub: pb2_grpc.ExternalScalerStub, ref: pb2.ScaledObjectRef) -> None:
    status_of(stub.GetMetricSpec, ref)
    status_of(stub.IsActive, ref)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=st.one_of(REFS, st.none()), metric_name=TEXT)
def test_arbitrary_get_metrics_requests_get_a_precise_status(
    stub: pb2_grpc.ExternalScalerStub, ref: pb2.ScaledObjectRef | None, metric_name: str
) -> None:
    request = pb2.GetMetricsRequest(metricName=metric_name)
    if ref is not None:
        request.scaledObjectRef.CopyFrom(ref)
    status_of(stub.GetMetrics, request)


# Names beyond Kubernetes' limits (253 characters, 63 for a namespace) are refused.
@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (pb2.ScaledObjectRef(name="n" * 10_000, namespace="llm", scalerMetadata=BASE_METADATA), "INVALID_ARGUMENT"),
        (
            pb2.ScaledObjectRef(name="chat", namespace="llm", scalerMetadata={"query": "x" * (MAX_METADATA_VALUE + 1)}),
            "INVALID_ARGUMENT",
        ),
        (
            pb2.ScaledObjectRef(name="chat", namespace="llm", scalerMetadata={f"k{i}": "v" for i in range(5000)}),
            "INVALID_ARGUMENT",
        ),
        (
            pb2.ScaledObjectRef(name="chat", namespace="llm", scalerMetadata={"query": "x" * (MAX_MESSAGE_BYTES + 1)}),
            "RESOURCE_EXHAUSTED",
        ),
    ],
    ids=["long-name", "long-value", "many-keys", "over-message-limit"],
)
def test_oversized_messages_are_bounded(
    stub: pb2_grpc.ExternalScalerStub, ref: pb2.ScaledObjectRef, expected: str
) -> None:
    assert status_of(stub.GetMetricSpec, ref).name == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=512))
def test_undecodable_bytes_never_reach_our_handlers(
    channel: grpc.Channel, stub: pb2_grpc.ExternalScalerStub, payload: bytes
) -> None:
    """Raw bytes on the wire: what protobuf cannot parse never reaches a handler of ours.

    Bytes protobuf cannot parse are answered INVALID_ARGUMENT naming the message type,
    and the server keeps answering well-formed calls afterwards.
    """
    raw_call = channel.unary_unary("/externalscaler.ExternalScaler/GetMetrics")
    try:
        raw_call(payload, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        assert code in ALLOWED, f"{code}: {error.details()}"
    healthy = pb2.ScaledObjectRef(name="chat", namespace="llm", scalerMetadata=BASE_METADATA)
    assert status_of(stub.GetMetricSpec, healthy) is grpc.StatusCode.OK
