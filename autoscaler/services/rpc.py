"""What a gRPC method of ours is, apart from the server that carries it.

The external scaler describes its methods here, as plain callables that tests can call
directly; `grpcio_server` turns them into grpc.aio handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

Writer = Callable[[Message], Awaitable[None]]
"""Sends one message of a server stream."""

UnaryHandler = Callable[[Any], "Message | Awaitable[Message]"]
"""Answers at once when it can: only a call that must wait returns an awaitable."""

StreamHandler = Callable[[Any, Writer], Awaitable[None]]
RequestObserver = Callable[[str, grpc.StatusCode, float], None]
"""Called once per finished RPC with (method, status code, seconds); for telemetry.
For a stream the seconds are the stream's lifetime."""


class RpcError(Exception):
    """Ends an RPC with a status code and a message meant for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RpcMethod:
    """One method; exactly one of `unary` and `server_stream` is set."""

    service: str
    name: str
    request_type: type[Message]
    unary: UnaryHandler | None = None
    server_stream: StreamHandler | None = None
    observed: bool = False
    """Report each call to the server's RequestObserver (the scaler's methods are)."""

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def truncated(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how long it was: errors may quote what callers sent."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def shown(text: str, limit: int = 128) -> str:
    """`text` quoted for an error message, cut to `limit` characters."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
