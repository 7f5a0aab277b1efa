"""Our methods as grpc.aio handlers, and the bound on long-lived server streams.

Each call's outcome is reported to the `RequestObserver` before its status is sent.
Every method of ours takes one request message, but is registered as client-streaming,
the same on the wire: grpc.aio would otherwise wait for that message with no time limit
before our handler runs, so a peer that announces a message and never finishes it
would hold the call (and its share of the server's in-flight calls) until the
connection closes. Here the message must arrive within `request_timeout` seconds.
`StreamLimitInterceptor` counts every server-streaming call (ours, grpcio's health
Watch and reflection alike) per connection and in total, and refuses one over either
cap with RESOURCE_EXHAUSTED before its handler runs: an open stream costs memory and a
wake-up per change for as long as the peer keeps it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from itertools import groupby
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from autoscaler.services.rpc import RequestObserver, RpcError, RpcMethod

_log = logging.getLogger(__name__)


def grpcio_handlers(
    methods: Iterable[RpcMethod], observer: RequestObserver | None, *, request_timeout: float
) -> list[grpc.GenericRpcHandler]:
    by_service = groupby(sorted(methods, key=lambda method: method.service), key=lambda method: method.service)
    return [
        grpc.method_handlers_generic_handler(
            service, {method.name: _handler(method, observer, request_timeout) for method in group}
        )
        for service, group in by_service
    ]


def _handler(method: RpcMethod, observer: RequestObserver | None, request_timeout: float) -> grpc.RpcMethodHandler:
    serializers: dict[str, Any] = {
        "request_deserializer": method.request_type.FromString,
        "response_serializer": _serialize,
    }

    def report(code: grpc.StatusCode, started: float) -> None:
        if observer is None or not method.observed:
            return
        try:
            observer(method.name, code, time.perf_counter() - started)
        except Exception:
            _log.exception("request observer failed for %s", method.name)

    async def received(requests: AsyncIterator[Any]) -> Any:
        """The call's one request message, within `request_timeout`."""
        try:
            async with asyncio.timeout(request_timeout):
                return await anext(aiter(requests))
        except TimeoutError:
            raise RpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"{method.name}: no request message within {request_timeout:g} s"
            ) from None
        except StopAsyncIteration:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}: no request message") from None
        except DecodeError:
            expected = method.request_type.DESCRIPTOR.full_name
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, f"{method.name}: not a {expected}") from None

    async def serve(context: grpc.aio.ServicerContext[Any, Any], body: Callable[[], Awaitable[Any]]) -> Any:
        """Run a handler and map its failure to the call's status, reported before it is sent."""
        started = time.perf_counter()
        try:
            result = await body()
        except RpcError as failure:
            report(failure.code, started)
            await context.abort(failure.code, failure.message)
        except asyncio.CancelledError:
            report(grpc.StatusCode.CANCELLED, started)
            raise
        except Exception:
            _log.exception("%s failed", method.name)
            report(grpc.StatusCode.INTERNAL, started)
            await context.abort(grpc.StatusCode.INTERNAL, f"{method.name}: internal error; see the autoscaler's log")
        report(grpc.StatusCode.OK, started)
        return result

    if method.unary is not None:
        unary = method.unary

        async def call_unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async def answer() -> Any:
                result = unary(await received(requests))
                return await result if inspect.isawaitable(result) else result

            return await serve(context, answer)

        return grpc.stream_unary_rpc_method_handler(call_unary, **serializers)

    if method.server_stream is not None:
        stream = method.server_stream

        async def call_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
            async def answer() -> None:
                await stream(await received(requests), context.write)

            await serve(context, answer)

        return grpc.stream_stream_rpc_method_handler(call_stream, **serializers)

    raise ValueError(f"{method.path} has no handler")


def _serialize(message: Message) -> bytes:
    return bytes(message.SerializeToString())


class StreamSlots:
    """Open server streams per connection (its peer address) and in total, each capped."""

    def __init__(self, *, per_connection: int, total: int) -> None:
        if per_connection < 1 or total < 1:
            raise ValueError(f"stream caps must be at least 1, got per connection {per_connection}, total {total}")
        self.per_connection = per_connection
        self.total = total
        self._open: Counter[str] = Counter()
        self._open_total = 0

    @property
    def open_total(self) -> int:
        return self._open_total

    def take(self, peer: str) -> str | None:
        """Hold a slot for a stream of `peer`; or say which cap is reached and hold nothing."""
        if self._open_total >= self.total:
            return f"the server already holds {self.total} open streams (its limit); retry later"
        if self._open[peer] >= self.per_connection:
            return f"this connection already holds {self.per_connection} open streams (the limit per connection)"
        self._open[peer] += 1
        self._open_total += 1
        return None

    def give_back(self, peer: str) -> None:
        self._open_total -= 1
        self._open[peer] -= 1
        if not self._open[peer]:
            del self._open[peer]


class StreamLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no stubs
    """Holds each server-streaming call to `StreamSlots`; unary calls pass untouched."""

    def __init__(self, slots: StreamSlots) -> None:
        self._slots = slots

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler.response_streaming:
            return handler
        return _limited(handler, self._slots)


def _limited(handler: grpc.RpcMethodHandler, slots: StreamSlots) -> grpc.RpcMethodHandler:
    inner: Callable[..., Any] = handler.stream_stream if handler.request_streaming else handler.unary_stream
    build = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler

    async def take(context: grpc.aio.ServicerContext[Any, Any]) -> str:
        peer = str(context.peer())
        refusal = slots.take(peer)
        if refusal is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        return peer

    if inspect.isasyncgenfunction(inner):

        async def yielding(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            peer = await take(context)
            try:
                async for response in inner(request, context):
                    yield response
            finally:
                slots.give_back(peer)

        behaviour: Callable[..., Any] = yielding
    else:

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            peer = await take(context)
            try:
                return await inner(request, context)
            finally:
                slots.give_back(peer)

        behaviour = writing
    return build(
        behaviour, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )
