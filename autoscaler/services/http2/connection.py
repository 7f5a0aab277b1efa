"""One HTTP/2 connection carrying gRPC calls, parsed and answered in the event loop's thread.

A unary call whose handler answers at once is served inside `data_received`, with no
task; everything produced by one read leaves in one write. Flow control is honoured in
both directions, and the peer's unconsumed data is bounded by the connection window:
it is only given back once a call has taken its request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf.message import DecodeError, Message

from autoscaler.services.http2.hpack_in import HeaderDecoder
from autoscaler.services.http2.wire import (
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    MAX_WINDOW,
    MESSAGE_PREFIX,
    PREFACE,
    STATUS_200,
    ErrorCode,
    Flag,
    FrameType,
    ProtocolViolationError,
    Setting,
    content_type,
    frame,
    goaway,
    literal,
    parse_settings,
    parse_timeout,
    percent_encode,
    read_uint31,
    rst_stream,
    settings_frame,
    status_only,
    unpadded,
    window_update,
)
from autoscaler.services.rpc import RequestObserver, RpcError, RpcMethod

_log = logging.getLogger(__name__)

_RESPONSE_HEADERS = STATUS_200 + content_type(b"application/grpc")
_OK_TRAILERS = literal(b"grpc-status", b"0")
_END_HEADERS_FRAME = Flag.END_HEADERS
_END_STREAM_HEADERS = Flag.END_HEADERS | Flag.END_STREAM
_MAX_HEADER_BLOCK = 64 * 1024
_MAX_PENDING_STREAM_BYTES = 1024 * 1024
_LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 16_384
    max_header_list_bytes: int = 16 * 1024
    connection_window: int = 16 * 1024 * 1024
    """Request bytes the peer may have in flight; unconsumed data never exceeds it."""


class _Stream:
    __slots__ = (
        "body",
        "deadline",
        "headers_sent",
        "id",
        "method",
        "pending",
        "remote_closed",
        "send_window",
        "started",
        "task",
        "trailers",
        "unacked",
    )

    def __init__(self, stream_id: int, method: RpcMethod, send_window: int, deadline: float | None) -> None:
        self.id = stream_id
        self.method = method
        self.body = bytearray()
        self.unacked = 0
        self.send_window = send_window
        self.pending: list[bytes] = []
        self.trailers: bytes | None = None
        self.remote_closed = False
        self.headers_sent = False
        self.task: asyncio.Task[None] | None = None
        self.deadline = deadline
        self.started = time.perf_counter()


class Http2Connection(asyncio.Protocol):
    """Server side of one connection; `router` maps a request path to its method."""

    def __init__(
        self,
        router: Mapping[bytes, RpcMethod],
        limits: ConnectionLimits,
        observer: RequestObserver | None,
        on_closed: Callable[[Http2Connection], None],
    ) -> None:
        self._router = router
        self._limits = limits
        self._observer = observer
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._inbox = bytearray()
        self._out = bytearray()
        self._preface_seen = False
        self._decoder = HeaderDecoder(max_header_list_size=limits.max_header_list_bytes)
        self._continuation: tuple[int, bytearray, bool] | None = None
        self._streams: dict[int, _Stream] = {}
        self._blocked: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._stream_window = limits.max_message_bytes + 1024
        self._released = 0
        self._goaway_sent = False
        self._closed = False
        self._drained = asyncio.Event()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        settings = {
            Setting.ENABLE_PUSH: 0,
            Setting.MAX_CONCURRENT_STREAMS: self._limits.max_concurrent_streams,
            Setting.INITIAL_WINDOW_SIZE: self._stream_window,
            Setting.MAX_HEADER_LIST_SIZE: self._limits.max_header_list_bytes,
        }
        # First on the wire, even ahead of answers to bytes a TLS layer delivered early.
        preface = settings_frame(settings) + window_update(0, self._limits.connection_window - DEFAULT_WINDOW)
        self._out[:0] = preface
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return  # lingering after a connection error: input is read and dropped
        try:
            self._inbox += data
            self._read_frames()
        except ProtocolViolationError as error:
            _log.info("closing an HTTP/2 connection: %s (%s)", error, error.code.name)
            self._fail(error.code, str(error))
        except Exception:
            _log.exception("closing an HTTP/2 connection after an internal error")
            self._fail(ErrorCode.INTERNAL_ERROR, "internal error")
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        # A peer that does not read what it asked for gets no more of its requests read.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        for stream in list(self._streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()
        self._blocked.clear()
        self._drained.set()
        self._on_closed(self)

    # --- shutdown -------------------------------------------------------------------------

    def start_drain(self) -> None:
        """GOAWAY: no new calls; the connection closes once its calls have finished."""
        if self._closed or self._goaway_sent:
            return
        self._goaway_sent = True
        self._out += goaway(self._last_stream_id, ErrorCode.NO_ERROR)
        self._flush()
        self._close_if_idle()

    async def wait_drained(self) -> None:
        await self._drained.wait()

    def abort(self) -> None:
        """Close now, dropping unsent bytes (close() would wait for a peer that may never read)."""
        if self._transport is not None:
            self._transport.abort()

    # --- frames ---------------------------------------------------------------------------

    def _read_frames(self) -> None:
        inbox = self._inbox
        if not self._preface_seen:
            if len(inbox) < len(PREFACE):
                if not PREFACE.startswith(bytes(inbox)):
                    raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            if inbox[: len(PREFACE)] != PREFACE:
                raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            del inbox[: len(PREFACE)]
            self._preface_seen = True
        offset, end = 0, len(inbox)
        while end - offset >= FRAME_HEADER_SIZE and not self._closed:
            high, low, frame_type, flags, stream_id = FRAME_HEADER.unpack_from(inbox, offset)
            length = high << 16 | low
            if length > DEFAULT_MAX_FRAME:
                raise ProtocolViolationError(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds 16384")
            start = offset + FRAME_HEADER_SIZE
            if end - start < length:
                break
            offset = start + length
            self._on_frame(frame_type, flags, stream_id & MAX_WINDOW, bytes(inbox[start:offset]))
        del inbox[:offset]

    def _on_frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is not None and frame_type != FrameType.CONTINUATION:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "header block interrupted before END_HEADERS")
        if frame_type == FrameType.DATA:
            self._on_data(flags, stream_id, payload)
        elif frame_type == FrameType.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif frame_type == FrameType.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif frame_type == FrameType.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif frame_type == FrameType.SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif frame_type == FrameType.PING:
            if len(payload) != 8 or stream_id:
                raise ProtocolViolationError(ErrorCode.FRAME_SIZE_ERROR, "PING must be 8 bytes on stream 0")
            if not flags & Flag.ACK:
                self._out += frame(FrameType.PING, Flag.ACK, 0, payload)
        elif frame_type == FrameType.RST_STREAM:
            self._on_reset(stream_id)
        elif frame_type == FrameType.GOAWAY:
            self._goaway_sent = True  # the peer sends no new calls; finish the ones we have
            self._close_if_idle()
        elif frame_type == FrameType.PUSH_PROMISE:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 requires.

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream_id > self._last_stream_id:
                raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._release(len(payload))  # a call we already ended: its bytes are dropped
            return
        stream.unacked += len(payload)
        data = unpadded(payload, flags)
        if len(stream.body) + len(data) > self._limits.max_message_bytes + MESSAGE_PREFIX.size:
            self._fail_call(
                stream,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request larger than the server's limit of {self._limits.max_message_bytes} bytes",
            )
            return
        stream.body += data
        if stream.method.per_message is not None:
            self._answer_each_message(stream)
        if flags & Flag.END_STREAM and stream.id in self._streams:
            self._end_of_request(stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = unpadded(payload, flags)
        if flags & Flag.PRIORITY:
            block = block[5:]
        if flags & Flag.END_HEADERS:
            self._on_header_block(stream_id, block, bool(flags & Flag.END_STREAM))
        else:
            self._continuation = (stream_id, bytearray(block), bool(flags & Flag.END_STREAM))

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        _, block, end_stream = self._continuation
        block += payload
        if len(block) > _MAX_HEADER_BLOCK:
            raise ProtocolViolationError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & Flag.END_HEADERS:
            self._continuation = None
            self._on_header_block(stream_id, bytes(block), end_stream)

    def _on_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        headers = self._decoder.decode(block)
        stream = self._streams.get(stream_id)
        if stream is not None:  # the client's trailers
            if not end_stream:
                raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "a second header block without END_STREAM")
            if not stream.remote_closed:
                self._end_of_request(stream)
            return
        if stream_id <= self._last_stream_id:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, f"stream {stream_id} reused")
        self._last_stream_id = stream_id
        if self._goaway_sent or len(self._streams) >= self._limits.max_concurrent_streams:
            self._out += rst_stream(stream_id, ErrorCode.REFUSED_STREAM)
            return
        path = http_method = content = timeout = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"content-type":
                content = value
            elif name == b"grpc-timeout":
                timeout = value
            elif name == b":method":
                http_method = value
        if http_method != b"POST" or content is None or not content.startswith(b"application/grpc"):
            self._out += frame(FrameType.HEADERS, _END_STREAM_HEADERS, stream_id, status_only(415))
            return
        method = self._router.get(path or b"")
        if method is None:
            unknown = (path or b"").decode("utf-8", "replace")
            self._trailers_only(stream_id, grpc.StatusCode.UNIMPLEMENTED, f"unknown method {unknown}")
            return
        seconds = None if timeout is None else parse_timeout(timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        stream = _Stream(stream_id, method, self._peer_initial_window, deadline)
        self._streams[stream_id] = stream
        if end_stream:
            self._end_of_request(stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolationError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = read_uint31(payload)
        if stream_id == 0:
            if increment == 0:
                raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolViolationError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            if increment == 0 or stream.send_window + increment > MAX_WINDOW:
                self._reset(stream, ErrorCode.FLOW_CONTROL_ERROR)
                return
            stream.send_window += increment
        self._drain_blocked()

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & Flag.ACK:
            return
        for key, value in parse_settings(payload):
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolationError(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
            elif key == Setting.MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self._peer_max_frame = value
        self._out += frame(FrameType.SETTINGS, Flag.ACK, 0)
        self._drain_blocked()

    def _on_reset(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._forget(stream)
            if stream.task is not None:
                stream.task.cancel()

    # --- calls ----------------------------------------------------------------------------

    def _end_of_request(self, stream: _Stream) -> None:
        stream.remote_closed = True
        self._release(stream.unacked)
        stream.unacked = 0
        method = stream.method
        if method.per_message is not None:
            if stream.body:
                self._fail_call(stream, grpc.StatusCode.INTERNAL, "the stream ended inside a message")
            else:
                self._finish(stream, grpc.StatusCode.OK, "")
            return
        try:
            messages = self._take_messages(stream)
            if len(messages) != 1 or stream.body:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{method.name} takes exactly one request message, got {len(messages)}",
                )
            request = self._decode(method, messages[0])
        except RpcError as failure:
            self._fail_call(stream, failure.code, failure.message)
            return
        if method.unary is not None:
            self._call_unary(stream, request)
        else:
            stream.task = asyncio.get_running_loop().create_task(self._serve_stream(stream, request))

    def _call_unary(self, stream: _Stream, request: Message) -> None:
        assert stream.method.unary is not None
        try:
            result = stream.method.unary(request)
        except RpcError as failure:
            self._fail_call(stream, failure.code, failure.message)
            return
        except Exception:
            _log.exception("%s failed", stream.method.name)
            self._fail_call(stream, grpc.StatusCode.INTERNAL, f"{stream.method.name}: internal error; see the log")
            return
        if isinstance(result, Message):
            self._send_message(stream, result)
            self._finish(stream, grpc.StatusCode.OK, "")
            return
        # The handler must wait (a target still warming up): its coroutine becomes the task
        # itself, so a reset or shutdown that cancels it never leaves a coroutine unawaited.
        loop = asyncio.get_running_loop()
        task = loop.create_task(result)  # type: ignore[arg-type]
        stream.task = task
        timer = None
        if stream.deadline is not None:
            timer = loop.call_at(loop.time() + max(0.0, stream.deadline - time.monotonic()), self._expire, stream)
        task.add_done_callback(lambda done: self._unary_done(stream, done, timer))

    def _expire(self, stream: _Stream) -> None:
        if stream.task is not None and not stream.task.done():
            stream.deadline = -1.0  # marks the cancellation as the deadline's
            stream.task.cancel()

    def _unary_done(self, stream: _Stream, task: asyncio.Task[Message], timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        if stream.id not in self._streams:  # the peer reset the call
            self._observe(stream, grpc.StatusCode.CANCELLED)
            return
        if task.cancelled():
            if stream.deadline == -1.0:
                self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
            else:
                self._finish(stream, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        elif isinstance(error := task.exception(), RpcError):
            self._finish(stream, error.code, error.message)
        elif error is not None:
            _log.error("%s failed", stream.method.name, exc_info=error)
            self._finish(stream, grpc.StatusCode.INTERNAL, f"{stream.method.name}: internal error; see the log")
        else:
            self._send_message(stream, task.result())
            self._finish(stream, grpc.StatusCode.OK, "")
        self._flush()

    async def _serve_stream(self, stream: _Stream, request: Message) -> None:
        """Run a server-streaming handler to its status, honouring the caller's deadline."""
        handler = stream.method.server_stream
        assert handler is not None

        async def write(message: Message) -> None:
            if stream.id not in self._streams:
                raise asyncio.CancelledError  # the peer reset the stream
            self._send_message(stream, message)
            if sum(map(len, stream.pending)) > _MAX_PENDING_STREAM_BYTES:
                self._reset(stream, ErrorCode.ENHANCE_YOUR_CALM)  # the peer stopped reading
                raise asyncio.CancelledError
            self._flush()

        code, message = grpc.StatusCode.OK, ""
        try:
            remaining = None if stream.deadline is None else max(0.0, stream.deadline - time.monotonic())
            async with asyncio.timeout(remaining):
                await handler(request, write)
        except RpcError as failure:
            code, message = failure.code, failure.message
        except TimeoutError:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
        except asyncio.CancelledError:
            if stream.id in self._streams:  # cancelled by the server's shutdown, not by the peer
                self._finish(stream, grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                self._flush()
            else:
                self._observe(stream, grpc.StatusCode.CANCELLED)
            raise
        except Exception:
            _log.exception("%s failed", stream.method.name)
            code, message = grpc.StatusCode.INTERNAL, f"{stream.method.name}: internal error; see the log"
        if stream.id in self._streams:
            self._finish(stream, code, message)
            self._flush()

    def _answer_each_message(self, stream: _Stream) -> None:
        handler = stream.method.per_message
        assert handler is not None
        consumed = len(stream.body)
        try:
            messages = self._take_messages(stream)
            for raw in messages:
                for response in handler(self._decode(stream.method, raw)):
                    self._send_message(stream, response)
        except RpcError as failure:
            self._fail_call(stream, failure.code, failure.message)
            return
        consumed -= len(stream.body)
        if consumed and not stream.remote_closed:
            self._out += window_update(stream.id, consumed)
            self._release(consumed)
            stream.unacked -= consumed

    def _take_messages(self, stream: _Stream) -> list[bytes]:
        body, messages, offset = stream.body, [], 0
        while len(body) - offset >= MESSAGE_PREFIX.size:
            compressed, length = MESSAGE_PREFIX.unpack_from(body, offset)
            if compressed:
                raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not accepted; send identity")
            if length > self._limits.max_message_bytes:
                raise RpcError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"request of {length} bytes exceeds the server's limit of {self._limits.max_message_bytes}",
                )
            start = offset + MESSAGE_PREFIX.size
            if len(body) - start < length:
                break
            messages.append(bytes(body[start : start + length]))
            offset = start + length
        del body[:offset]
        return messages

    @staticmethod
    def _decode(method: RpcMethod, raw: bytes) -> Message:
        try:
            return method.request_type.FromString(raw)
        except DecodeError as error:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{method.name}: the request is not a valid {method.request_type.DESCRIPTOR.full_name}: {error}",
            ) from None

    # --- sending --------------------------------------------------------------------------

    def _send_message(self, stream: _Stream, message: Message) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            self._out += frame(FrameType.HEADERS, _END_HEADERS_FRAME, stream.id, _RESPONSE_HEADERS)
        payload = message.SerializeToString()
        data = MESSAGE_PREFIX.pack(0, len(payload)) + payload
        if not stream.pending and len(data) <= min(self._send_window, stream.send_window, self._peer_max_frame):
            self._send_window -= len(data)
            stream.send_window -= len(data)
            self._out += frame(FrameType.DATA, 0, stream.id, data)
        else:
            stream.pending.append(data)
            self._blocked[stream.id] = stream
            self._drain_blocked()

    def _finish(self, stream: _Stream, code: grpc.StatusCode, message: str) -> None:
        """Trailers with the call's status (after any queued data), then the stream is done."""
        self._observe(stream, code)
        if not stream.headers_sent:
            self._trailers_only(stream.id, code, message)
            stream.remote_closed = True  # nothing more to read: a trailers-only answer ends the call
            self._forget(stream)
            return
        trailers = _OK_TRAILERS if code is grpc.StatusCode.OK else _status_trailers(code, message)
        if stream.pending:
            stream.trailers = trailers
            return
        self._out += frame(FrameType.HEADERS, _END_STREAM_HEADERS, stream.id, trailers)
        self._end_locally(stream)

    def _fail_call(self, stream: _Stream, code: grpc.StatusCode, message: str) -> None:
        self._finish(stream, code, message)
        if not stream.remote_closed:  # the peer may still be sending: stop it
            self._out += rst_stream(stream.id, ErrorCode.NO_ERROR)
            self._forget(stream)

    def _trailers_only(self, stream_id: int, code: grpc.StatusCode, message: str) -> None:
        block = _RESPONSE_HEADERS + _status_trailers(code, message)
        self._out += frame(FrameType.HEADERS, _END_STREAM_HEADERS, stream_id, block)

    def _drain_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            while stream.pending and self._send_window > 0 and stream.send_window > 0:
                data = stream.pending[0]
                size = min(len(data), self._send_window, stream.send_window, self._peer_max_frame)
                self._out += frame(FrameType.DATA, 0, stream.id, data[:size])
                self._send_window -= size
                stream.send_window -= size
                if size == len(data):
                    stream.pending.pop(0)
                else:
                    stream.pending[0] = data[size:]
            if stream.pending:
                continue
            del self._blocked[stream.id]
            if stream.trailers is not None:
                self._out += frame(FrameType.HEADERS, _END_STREAM_HEADERS, stream.id, stream.trailers)
                self._end_locally(stream)

    def _end_locally(self, stream: _Stream) -> None:
        if stream.remote_closed:
            self._forget(stream)

    def _reset(self, stream: _Stream, code: ErrorCode) -> None:
        self._out += rst_stream(stream.id, code)
        self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        if self._streams.pop(stream.id, None) is not None:
            self._release(stream.unacked)
            stream.unacked = 0
        self._blocked.pop(stream.id, None)
        self._close_if_idle()

    def _release(self, consumed: int) -> None:
        """Give consumed request bytes back to the peer's connection window, in batches."""
        self._released += consumed
        if self._released >= self._limits.connection_window // 4:
            self._out += window_update(0, self._released)
            self._released = 0

    def _observe(self, stream: _Stream, code: grpc.StatusCode) -> None:
        if self._observer is None or not stream.method.observed:
            return
        try:
            self._observer(stream.method.name, code, time.perf_counter() - stream.started)
        except Exception:
            _log.exception("request observer failed for %s", stream.method.name)

    def _close_if_idle(self) -> None:
        if self._goaway_sent and not self._streams and self._transport is not None:
            self._flush()
            self._transport.close()

    def _fail(self, code: ErrorCode, reason: str) -> None:
        """GOAWAY, then a lingering close: closing with unread input would reset the
        connection, and the peer could lose the GOAWAY that says what it did wrong."""
        self._out += goaway(self._last_stream_id, code, reason.encode()[:256])
        self._flush()
        self._closed = True
        transport = self._transport
        if transport is None:
            return
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.abort)
        else:
            transport.close()

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes(self._out))
        self._out.clear()
        if not self._streams and self._goaway_sent:
            self._drained.set()


def _status_trailers(code: grpc.StatusCode, message: str) -> bytes:
    status = literal(b"grpc-status", str(code.value[0]).encode())
    return status + literal(b"grpc-message", percent_encode(message)) if message else status
