"""What a gRPC method is, independent of the server that carries it.

The external scaler, health checking and reflection describe their methods here once;
both servers (the lean HTTP/2 one and grpc.aio) route calls to the same handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

Writer = Callable[[Message], Awaitable[None]]
"""Sends one message of a server stream."""

UnaryHandler = Callable[[Any], "Message | Awaitable[Message]"]
"""Answers at once when it can: only a call that must wait returns an awaitable."""

StreamHandler = Callable[[Any, Writer], Awaitable[None]]
PerMessageHandler = Callable[[Any], Iterable[Message]]
"""A bidirectional stream that answers each request message on its own (reflection)."""

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
    """One method; exactly one of the handlers is set."""

    service: str
    name: str
    request_type: type[Message]
    unary: UnaryHandler | None = None
    server_stream: StreamHandler | None = None
    per_message: PerMessageHandler | None = None
    observed: bool = False
    """Report each call to the server's RequestObserver (the scaler's methods are)."""

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"
