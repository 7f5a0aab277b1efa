"""The same methods carried by grpc.aio, for deployments that prefer gRPC's own C core.

`grpcServer: grpcio` selects it. It is the reference the lean HTTP/2 server is tested
against; it costs more CPU per call (see docs/grpc.md).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from itertools import groupby
from typing import Any

import grpc
from google.protobuf.message import Message

from autoscaler.services.rpc import RequestObserver, RpcError, RpcMethod

_log = logging.getLogger(__name__)


def grpcio_handlers(methods: Iterable[RpcMethod], observer: RequestObserver | None) -> list[grpc.GenericRpcHandler]:
    by_service = groupby(sorted(methods, key=lambda method: method.service), key=lambda method: method.service)
    return [
        grpc.method_handlers_generic_handler(service, {method.name: _handler(method, observer) for method in group})
        for service, group in by_service
    ]


def _handler(method: RpcMethod, observer: RequestObserver | None) -> grpc.RpcMethodHandler:
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

        async def call_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async def answer() -> Any:
                result = unary(request)
                return await result if inspect.isawaitable(result) else result

            return await serve(context, answer)

        return grpc.unary_unary_rpc_method_handler(call_unary, **serializers)

    if method.server_stream is not None:
        stream = method.server_stream

        async def call_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await serve(context, lambda: stream(request, context.write))

        return grpc.unary_stream_rpc_method_handler(call_stream, **serializers)

    per_message = method.per_message
    assert per_message is not None

    async def call_each(
        requests: AsyncIterator[Any], _context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for request in requests:
            for response in per_message(request):
                yield response

    return grpc.stream_stream_rpc_method_handler(call_each, **serializers)


def _serialize(message: Message) -> bytes:
    return bytes(message.SerializeToString())
