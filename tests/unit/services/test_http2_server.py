"""The lean HTTP/2 gRPC server at the frame level, driven by an independent client (h2).

The KEDA-client integration tests cover the RPCs with grpc's own client; here each
protocol rule and hostile input is exercised directly: status mapping, flow control,
deadlines, resets, limits, shutdown and broken framing.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from grpc_health.v1 import health_pb2
from hyperframe.frame import ContinuationFrame, HeadersFrame, WindowUpdateFrame

from autoscaler.services.http2.connection import ConnectionLimits
from autoscaler.services.http2.server import Http2GrpcServer
from autoscaler.services.rpc import RpcError, RpcMethod

SERVICE = "test.Probe"
Request = health_pb2.HealthCheckRequest
Reply = health_pb2.HealthCheckResponse


def framed(message: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    return struct.pack(">BI", int(compressed), len(message) if declared is None else declared) + message


def unframed(data: bytes) -> list[bytes]:
    messages = []
    while data:
        (length,) = struct.unpack_from(">I", data, 1)
        messages.append(data[5 : 5 + length])
        data = data[5 + length :]
    return messages


@dataclass
class Answer:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None

    @property
    def status(self) -> str | None:
        return (self.trailers or self.headers).get("grpc-status")

    @property
    def replies(self) -> list[Reply]:
        return [Reply.FromString(message) for message in unframed(self.data)]


class H2Client:
    """One HTTP/2 connection made with the h2 library, answering PINGs and windows itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: dict[int, int]) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.connection = h2.connection.H2Connection(config)
        self.connection.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.connection.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.ended: dict[int, asyncio.Event] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.pings: list[bytes] = []
        self.flush()
        self._reading = asyncio.get_running_loop().create_task(self._read())

    def flush(self) -> None:
        self.writer.write(self.connection.data_to_send())

    def start(self, path: str, body: bytes | None, headers: Iterable[tuple[str, str]] = ()) -> int:
        stream_id = self.connection.get_next_available_stream_id()
        request_headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *headers,
        ]
        self.answers[stream_id] = Answer()
        self.ended[stream_id] = asyncio.Event()
        self.connection.send_headers(stream_id, request_headers, end_stream=body is None)
        if body is not None:
            self.connection.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    async def answer(self, stream_id: int, timeout: float = 5.0) -> Answer:
        await asyncio.wait_for(self.ended[stream_id].wait(), timeout)
        return self.answers[stream_id]

    async def call(self, path: str, body: bytes | None, headers: Iterable[tuple[str, str]] = ()) -> Answer:
        return await self.answer(self.start(path, body, headers))

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            try:
                events = self.connection.receive_data(data)
            except h2.exceptions.ProtocolError:
                continue  # h2 refuses frames after a GOAWAY; the test only waits for the close
            for event in events:
                self._on(event)
            self.flush()
        self.closed.set()
        for ended in self.ended.values():
            ended.set()

    def _on(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        answer = self.answers.get(stream_id)
        if isinstance(event, h2.events.ResponseReceived) and answer is not None:
            answer.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived) and answer is not None:
            answer.data += event.data
            self.connection.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.TrailersReceived) and answer is not None:
            answer.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamReset) and answer is not None:
            answer.reset = event.error_code
            self.ended[stream_id].set()
        elif isinstance(event, h2.events.StreamEnded) and answer is not None:
            self.ended[stream_id].set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.pings.append(event.ping_data)

    async def close(self) -> None:
        self._reading.cancel()
        self.writer.close()


@dataclass
class Probe:
    """A server with test methods, and what it observed."""

    server: Http2GrpcServer
    port: int
    release: asyncio.Event
    observed: list[tuple[str, grpc.StatusCode]]
    clients: list[H2Client] = field(default_factory=list)

    async def client(self, **settings: int) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        codes = {getattr(h2.settings.SettingCodes, name.upper()): value for name, value in settings.items()}
        client = H2Client(reader, writer, codes)
        self.clients.append(client)
        return client


def probe_methods(release: asyncio.Event) -> list[RpcMethod]:
    def echo(request: Request) -> Reply:
        if request.service == "fail":
            raise RpcError(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail: ünïcode % kept")
        if request.service == "crash":
            raise RuntimeError("a bug")
        return Reply(status=Reply.SERVING)

    async def wait_for_release(request: Request) -> Reply:
        await release.wait()
        return Reply(status=Reply.NOT_SERVING)

    def big(request: Request) -> Request:
        return Request(service="x" * 200_000)

    async def stream(request: Request, write: object) -> None:
        for _ in range(3):
            await write(Reply(status=Reply.SERVING))  # type: ignore[operator]
        await release.wait()

    def each(request: Request) -> list[Reply]:
        return [Reply(status=Reply.SERVING)] * len(request.service)

    return [
        RpcMethod(SERVICE, "Echo", Request, unary=echo, observed=True),
        RpcMethod(SERVICE, "Wait", Request, unary=wait_for_release, observed=True),
        RpcMethod(SERVICE, "Big", Request, unary=big),
        RpcMethod(SERVICE, "Stream", Request, server_stream=stream, observed=True),
        RpcMethod(SERVICE, "Each", Request, per_message=each),
    ]


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    release, observed = asyncio.Event(), list[tuple[str, grpc.StatusCode]]()
    limits = ConnectionLimits(max_message_bytes=1024, max_concurrent_streams=8)
    server = Http2GrpcServer(
        probe_methods(release),
        limits=limits,
        observer=lambda method, code, _seconds: observed.append((method, code)),
        tls=None,
    )
    port = await server.start("127.0.0.1", 0)
    probe = Probe(server, port, release, observed)
    yield probe
    release.set()
    for client in probe.clients:
        await client.close()
    await server.stop(0.5)


def echo_body(service: str = "") -> bytes:
    return framed(Request(service=service).SerializeToString())


# --- calls ----------------------------------------------------------------------------------


async def test_a_unary_call_gets_headers_one_message_and_ok_trailers(probe: Probe) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Echo", echo_body())
    assert answer.headers[":status"] == "200"
    assert answer.headers["content-type"] == "application/grpc"
    assert [reply.status for reply in answer.replies] == [Reply.SERVING]
    assert answer.trailers == {"grpc-status": "0"}
    assert probe.observed == [("Echo", grpc.StatusCode.OK)]


async def test_many_calls_share_one_connection(probe: Probe) -> None:
    client = await probe.client()
    streams = [client.start(f"/{SERVICE}/Echo", echo_body()) for _ in range(200)]
    answers = [await client.answer(stream) for stream in streams]
    assert all(answer.status == "0" for answer in answers)


@pytest.mark.parametrize(
    ("service", "status", "message"),
    [
        ("fail", "9", "asked to fail: %C3%BCn%C3%AFcode %25 kept"),
        ("crash", "13", "Echo: internal error; see the log"),
    ],
)
async def test_a_failure_is_a_trailers_only_answer_with_an_encoded_message(
    probe: Probe, service: str, status: str, message: str
) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Echo", echo_body(service))
    assert answer.headers["grpc-status"] == status
    assert answer.headers["grpc-message"] == message
    assert answer.data == b""


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/no.Such/Method", echo_body(), "12", "unknown method /no.Such/Method"),
        (f"/{SERVICE}/Echo", framed(b"x", compressed=True), "12", "compressed"),
        (f"/{SERVICE}/Echo", framed(b"", declared=10_000_000), "8", "limit of 1024"),
        (f"/{SERVICE}/Echo", framed(b"\xff\xff\xff"), "3", "not a valid grpc.health.v1.HealthCheckRequest"),
        (f"/{SERVICE}/Echo", echo_body() + echo_body(), "3", "exactly one request message, got 2"),
        (f"/{SERVICE}/Echo", None, "3", "exactly one request message, got 0"),
        (f"/{SERVICE}/Echo", echo_body()[:-1] + b"", "3", "exactly one"),
    ],
    ids=["unknown-method", "compressed", "oversized", "undecodable", "two-messages", "no-message", "truncated"],
)
async def test_bad_requests_get_a_precise_status_and_the_connection_lives_on(
    probe: Probe, path: str, body: bytes | None, status: str, fragment: str
) -> None:
    client = await probe.client()
    answer = await client.call(path, body)
    assert answer.status == status
    assert fragment in (answer.trailers or answer.headers).get("grpc-message", "")
    assert (await client.call(f"/{SERVICE}/Echo", echo_body())).status == "0"


async def test_a_request_body_beyond_the_limit_is_refused_before_it_is_buffered(probe: Probe) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Echo", framed(b"x" * 4000))
    assert answer.status == "8"  # RESOURCE_EXHAUSTED
    assert (await client.call(f"/{SERVICE}/Echo", echo_body())).status == "0"


async def test_a_request_that_is_not_grpc_gets_http_415(probe: Probe) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Echo", echo_body(), headers=[("content-type", "text/plain")])
    assert answer.headers[":status"] == "415"


# --- waiting calls: deadlines, resets, streams --------------------------------------------------


async def test_a_waiting_call_is_answered_when_it_can_be(probe: Probe) -> None:
    client = await probe.client()
    stream = client.start(f"/{SERVICE}/Wait", echo_body())
    await asyncio.sleep(0.05)
    probe.release.set()
    answer = await client.answer(stream)
    assert [reply.status for reply in answer.replies] == [Reply.NOT_SERVING]
    assert answer.trailers["grpc-status"] == "0"


async def test_the_callers_deadline_ends_a_waiting_call(probe: Probe) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Wait", echo_body(), headers=[("grpc-timeout", "50m")])
    assert answer.status == "4"  # DEADLINE_EXCEEDED
    assert probe.observed == [("Wait", grpc.StatusCode.DEADLINE_EXCEEDED)]


async def test_a_reset_cancels_the_waiting_call(probe: Probe) -> None:
    client = await probe.client()
    stream = client.start(f"/{SERVICE}/Wait", echo_body())
    await asyncio.sleep(0.05)
    client.connection.reset_stream(stream)
    client.flush()
    await asyncio.sleep(0.05)
    assert probe.observed == [("Wait", grpc.StatusCode.CANCELLED)]
    assert (await client.call(f"/{SERVICE}/Echo", echo_body())).status == "0"


async def test_a_server_stream_sends_each_message_then_its_status(probe: Probe) -> None:
    client = await probe.client()
    stream = client.start(f"/{SERVICE}/Stream", echo_body())
    await asyncio.sleep(0.05)
    assert len(unframed(client.answers[stream].data)) == 3
    probe.release.set()
    answer = await client.answer(stream)
    assert answer.trailers["grpc-status"] == "0"
    assert probe.observed == [("Stream", grpc.StatusCode.OK)]


async def test_a_bidirectional_stream_answers_each_message(probe: Probe) -> None:
    client = await probe.client()
    answer = await client.call(f"/{SERVICE}/Each", echo_body("ab") + echo_body("c"))
    assert len(answer.replies) == 3
    assert answer.trailers["grpc-status"] == "0"


# --- flow control and limits ------------------------------------------------------------------


async def test_a_large_answer_waits_for_the_clients_window(probe: Probe) -> None:
    client = await probe.client(initial_window_size=1000)
    answer = await client.call(f"/{SERVICE}/Big", echo_body())
    assert answer.trailers["grpc-status"] == "0"
    assert Request.FromString(unframed(answer.data)[0]).service == "x" * 200_000


async def test_streams_beyond_the_limit_are_refused(probe: Probe) -> None:
    client = await probe.client()
    waiting = [client.start(f"/{SERVICE}/Wait", echo_body()) for _ in range(8)]
    refused = await client.call(f"/{SERVICE}/Echo", echo_body())
    assert refused.reset == h2.errors.ErrorCodes.REFUSED_STREAM
    probe.release.set()
    answers = [await client.answer(stream) for stream in waiting]
    assert all(answer.status == "0" for answer in answers)


async def test_pings_are_acknowledged(probe: Probe) -> None:
    client = await probe.client()
    client.connection.ping(b"12345678")
    client.flush()
    await asyncio.sleep(0.05)
    assert client.pings == [b"12345678"]


# --- shutdown -----------------------------------------------------------------------------------


async def test_shutdown_sends_goaway_and_closes_once_calls_in_flight_finish(probe: Probe) -> None:
    """(h2 treats GOAWAY as the end of its state machine; grpc's own clients read the answer:
    see the KEDA-client test of a call in flight during shutdown.)"""
    client = await probe.client()
    stream = client.start(f"/{SERVICE}/Wait", echo_body())
    await asyncio.sleep(0.05)
    stopping = asyncio.get_running_loop().create_task(probe.server.stop(5.0))
    await asyncio.sleep(0.05)
    assert client.goaway is not None
    assert client.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert client.goaway.last_stream_id == stream
    assert not client.closed.is_set()
    probe.release.set()
    await asyncio.wait_for(stopping, 5)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert probe.observed == [("Wait", grpc.StatusCode.OK)]


async def test_calls_still_in_flight_after_the_grace_period_are_unavailable(probe: Probe) -> None:
    client = await probe.client()
    stream = client.start(f"/{SERVICE}/Wait", echo_body())
    await asyncio.sleep(0.05)
    await probe.server.stop(0.1)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.answers[stream].status in {None, "14"}  # UNAVAILABLE, or cut off with the connection


# --- broken framing: the connection ends with GOAWAY, the server keeps serving others ---------------


async def raw_connection(probe: Probe) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", probe.port)


def goaway_code(data: bytes) -> int | None:
    """The error code of the first GOAWAY frame in `data`, if any."""
    position = 0
    while position + 9 <= len(data):
        length = int.from_bytes(data[position : position + 3], "big")
        if data[position + 3] == 0x7:
            return int.from_bytes(data[position + 13 : position + 17], "big")
        position += 9 + length
    return None


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(-1), 5)


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
SETTINGS_ON_STREAM_1 = b"\x00\x00\x06\x04\x00\x00\x00\x00\x01" + b"\x00" * 6


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", h2.errors.ErrorCodes.PROTOCOL_ERROR),
        (PREFACE + EMPTY_SETTINGS + b"\x00\x80\x00\x00\x00\x00\x00\x00\x01", h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
        (PREFACE + EMPTY_SETTINGS + SETTINGS_ON_STREAM_1, h2.errors.ErrorCodes.PROTOCOL_ERROR),
        (
            PREFACE + EMPTY_SETTINGS + WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(),
            h2.errors.ErrorCodes.FLOW_CONTROL_ERROR,
        ),
        (PREFACE + EMPTY_SETTINGS + HeadersFrame(1, data=b"\xff\xff\xff\xff", flags=["END_HEADERS"]).serialize(),
         h2.errors.ErrorCodes.COMPRESSION_ERROR),
        (PREFACE + EMPTY_SETTINGS + HeadersFrame(2, data=b"\x82", flags=["END_HEADERS"]).serialize(),
         h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ],
    ids=["http1", "oversized-frame", "settings-on-a-stream", "window-overflow", "bad-hpack", "even-stream-id"],
)  # fmt: skip
async def test_broken_framing_ends_the_connection_with_goaway(probe: Probe, payload: bytes, code: int) -> None:
    reader, writer = await raw_connection(probe)
    writer.write(payload)
    assert goaway_code(await read_until_closed(reader)) == code
    writer.close()
    assert (await (await probe.client()).call(f"/{SERVICE}/Echo", echo_body())).status == "0"


async def test_an_endless_header_block_is_cut_off(probe: Probe) -> None:
    reader, writer = await raw_connection(probe)
    writer.write(PREFACE + EMPTY_SETTINGS + HeadersFrame(1, data=b"\x82").serialize())
    for _ in range(10):
        writer.write(ContinuationFrame(1, data=b"\x00" * 16_000).serialize())
    assert goaway_code(await read_until_closed(reader)) == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    writer.close()
