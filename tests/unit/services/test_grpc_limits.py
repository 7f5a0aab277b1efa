"""The gRPC server's bounds on what a caller can make it hold, through a real server on loopback.

The hostile-peer versions, with raw HTTP/2 and memory measured, are in tests/security/.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoscaler.services.grpc_scaler import TargetChanges, pb2, pb2_grpc
from autoscaler.services.grpc_server import GrpcServer, GrpcServerSettings
from autoscaler.services.grpcio_server import StreamSlots
from tests.security.hostile import DataFrame, HeadersFrame, connect, grpc_message, grpc_statuses, header_block
from tests.unit.services.fake_engine import FakeEngine, key_and_spec, metadata, target_snapshot

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""Each channel opens its own connection instead of sharing the process-wide one."""
TIMEOUT = 5.0


def ref(name: str = "llm") -> pb2.ScaledObjectRef:
    return pb2.ScaledObjectRef(name=name, namespace="prod", scalerMetadata=metadata())


async def started(engine: FakeEngine, **limits: float) -> GrpcServer:
    server = GrpcServer(engine, GrpcServerSettings(host="127.0.0.1", port=0, **limits))  # type: ignore[arg-type]
    await server.start()
    return server


@pytest.fixture
async def engine() -> FakeEngine:
    engine = FakeEngine()
    key, spec = key_and_spec("prod", "llm", metadata())
    engine.publish(target_snapshot(key, spec))
    return engine


@pytest.fixture
async def small_server(engine: FakeEngine) -> AsyncIterator[GrpcServer]:
    server = await started(engine, max_streams_per_connection=3, max_streams=5, max_connections=4)
    yield server
    await server.stop(None)


def channel(server: GrpcServer) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OWN_CONNECTION)


async def opened(stub: pb2_grpc.ExternalScalerStub) -> grpc.aio.UnaryStreamCall:
    """A StreamIsActive stream that has delivered its first answer, so it holds its slot."""
    stream = stub.StreamIsActive(ref(), timeout=30)
    assert (await stream.read()).result is True
    return stream


async def refusal(stream: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.read()
    return raised.value


async def test_streams_are_capped_per_connection_and_in_total(small_server: GrpcServer) -> None:
    async with channel(small_server) as first, channel(small_server) as second:
        stub_a = pb2_grpc.ExternalScalerStub(first)  # type: ignore[no-untyped-call]
        stub_b = pb2_grpc.ExternalScalerStub(second)  # type: ignore[no-untyped-call]
        held = [await opened(stub_a) for _ in range(3)]
        error = await refusal(stub_a.StreamIsActive(ref(), timeout=TIMEOUT))
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this connection already holds 3 open streams" in (error.details() or "")
        held += [await opened(stub_b) for _ in range(2)]
        watch = health_pb2_grpc.HealthStub(second).Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        error = await refusal(watch)  # grpcio's own Watch counts too
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already holds 5 open streams" in (error.details() or "")
        # Unary calls are not streams: they keep being answered.
        assert (await stub_b.GetMetricSpec(ref(), timeout=TIMEOUT)).metricSpecs
        held[0].cancel()
        await asyncio.sleep(0.2)
        held.append(await opened(stub_b))
        for stream in held:
            stream.cancel()


async def test_connections_beyond_the_cap_are_closed(small_server: GrpcServer) -> None:
    channels = [channel(small_server) for _ in range(5)]
    try:
        codes = []
        for each in channels:
            try:
                await pb2_grpc.ExternalScalerStub(each).GetMetricSpec(ref(), timeout=TIMEOUT)  # type: ignore[no-untyped-call]
                codes.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
        assert codes == [grpc.StatusCode.OK] * 4 + [grpc.StatusCode.UNAVAILABLE]
    finally:
        for each in channels:
            await each.close()


@pytest.mark.parametrize(
    ("metadata_bytes", "message_bytes", "expected"),
    [(20_000, 0, "metadata size exceeds"), (0, 70_000, "larger than max")],
    ids=["call metadata", "message"],
)
async def test_oversized_calls_are_resource_exhausted(
    small_server: GrpcServer, metadata_bytes: int, message_bytes: int, expected: str
) -> None:
    request = pb2.ScaledObjectRef(name="llm", namespace="prod", scalerMetadata={"query": "x" * message_bytes})
    async with channel(small_server) as each:
        stub = pb2_grpc.ExternalScalerStub(each)  # type: ignore[no-untyped-call]
        call = stub.GetMetricSpec(request, timeout=TIMEOUT, metadata=(("x-big", "v" * metadata_bytes),))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert expected in (raised.value.details() or "")
        assert (await stub.GetMetricSpec(ref(), timeout=TIMEOUT)).metricSpecs  # the connection survives


async def test_undecodable_requests_are_invalid_argument_naming_the_type(small_server: GrpcServer) -> None:
    async with channel(small_server) as each:
        raw = each.unary_unary("/externalscaler.ExternalScaler/GetMetrics")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await raw(b"\xff\xff\xff", timeout=TIMEOUT)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a externalscaler.GetMetricsRequest" in (raised.value.details() or "")


async def test_a_request_message_that_never_completes_ends_the_call(engine: FakeEngine) -> None:
    """A length prefix announcing more than is ever sent: DEADLINE_EXCEEDED after the request timeout."""
    server = await started(engine, request_timeout_seconds=0.3)
    try:
        raw = await asyncio.to_thread(connect, server.port)
        announced = grpc_message(ref().SerializeToString(), declared=1_000)
        block = header_block("/externalscaler.ExternalScaler/GetMetricSpec")
        await asyncio.to_thread(raw.send, HeadersFrame(1, data=block, flags=["END_HEADERS"]).serialize())
        await asyncio.to_thread(raw.send, DataFrame(1, data=announced).serialize())
        await asyncio.to_thread(raw.drain, 1.0)
        raw.close()
        assert grpc_statuses(raw) == {1: grpc.StatusCode.DEADLINE_EXCEEDED.value[0]}
    finally:
        await server.stop(None)


async def test_an_idle_connection_is_sent_away(engine: FakeEngine) -> None:
    server = await started(engine, max_connection_idle_seconds=0.3)
    try:
        async with channel(server) as each:
            await pb2_grpc.ExternalScalerStub(each).GetMetricSpec(ref(), timeout=TIMEOUT)  # type: ignore[no-untyped-call]
            assert each.get_state() is grpc.ChannelConnectivity.READY
            await asyncio.sleep(1.0)
            assert each.get_state() is grpc.ChannelConnectivity.IDLE  # GOAWAY "connection idle"
    finally:
        await server.stop(None)


async def test_a_waiter_wakes_for_its_own_target_only(engine: FakeEngine) -> None:
    changes = TargetChanges(engine)
    watched, _ = key_and_spec("prod", "llm", metadata())
    other, other_spec = key_and_spec("prod", "other", metadata())
    seen = engine.snapshot().get(watched)
    waiter = asyncio.get_running_loop().create_task(changes.wait(watched, seen, timeout=10.0))
    await asyncio.sleep(0.05)
    engine.publish(target_snapshot(other, other_spec))  # another target's change
    await asyncio.sleep(0.1)
    assert not waiter.done()
    _, spec = key_and_spec("prod", "llm", metadata())
    replanned = target_snapshot(watched, spec)
    engine.publish(replanned)
    assert await asyncio.wait_for(waiter, 1.0) is replanned
    await changes.close()


def test_slots_are_given_back() -> None:
    slots = StreamSlots(per_connection=1, total=2)
    assert slots.take("a") is None
    assert slots.take("a") is not None
    assert slots.take("b") is None
    assert slots.take("c") is not None
    slots.give_back("a")
    assert slots.take("c") is None
    assert slots.open_total == 2
    with pytest.raises(ValueError, match="at least 1"):
        StreamSlots(per_connection=0, total=1)
