"""The HTTP listener: aiohttp with every connection-level resource bounded.

A caller must not be able to make the daemon hold connections, header buffers or
file descriptors without limit: those descriptors share the process's open-file limit
with the gRPC port that KEDA depends on.

- At most `max_connections` connections are open; one more is accepted and closed at
  once, so it costs a descriptor for microseconds instead of waiting in the kernel's
  queue.
- aiohttp's keep-alive timer starts when a connection opens and is re-armed after each
  response; while it waits for a complete request it closes the connection when the
  timer fires. One setting, `idle_timeout_seconds`, therefore bounds both an idle
  connection and one that sends its headers slowly (slowloris).
- The request line, each header and the number of headers are capped below aiohttp's
  defaults: no route takes more than a bearer token.
- Errors that aiohttp answers itself (a malformed request) carry the same headers as
  the application's answers: `nosniff` and a `Server` header without versions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

# Set on every response: no version for a scanner to match, no content sniffing.
BASE_HEADERS = {"Server": "predictive-autoscaler", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpServerLimits:
    max_connections: int = 256
    idle_timeout_seconds: float = 15.0
    max_request_line_bytes: int = 4096
    max_header_bytes: int = 8190  # one header line: a ServiceAccount token is about 1 KB
    max_headers: int = 32
    shutdown_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not self.idle_timeout_seconds > 0:
            raise ValueError("idle_timeout_seconds must be positive: 0 would never close an idle connection")


def apply_base_headers(response: web.StreamResponse) -> None:
    response.headers.update(BASE_HEADERS)


class _RequestHandler(web.RequestHandler):
    """aiohttp's connection handler, counted, with the base headers on its own errors."""

    def __init__(self, server: BoundedHttpServer, manager: web.Server, **options: Any) -> None:
        super().__init__(manager, **options)
        self._bounded = server

    def connection_lost(self, exc: BaseException | None) -> None:
        self._bounded.connection_closed()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        apply_base_headers(response)
        return response


class _Refused(asyncio.Protocol):
    """A connection over the cap: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class BoundedHttpServer:
    """Serves an aiohttp application on host:port within `HttpServerLimits`."""

    def __init__(self, app: web.Application, *, host: str, port: int, limits: HttpServerLimits) -> None:
        self._host, self._port, self._limits = host, port, limits
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=limits.shutdown_grace_seconds)
        self._listener: asyncio.Server | None = None
        self._open = 0
        self.refused = 0
        self._handler_options: dict[str, Any] = {
            "keepalive_timeout": limits.idle_timeout_seconds,
            "max_line_size": limits.max_request_line_bytes,
            "max_field_size": limits.max_header_bytes,
            "max_headers": limits.max_headers,
            "access_log": None,
        }

    @property
    def open_connections(self) -> int:
        return self._open

    async def start(self) -> int:
        """Listen; return the bound port (the kernel's choice when port is 0)."""
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._protocol, self._host, self._port)
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    def _protocol(self) -> asyncio.Protocol:
        manager = self._runner.server
        if manager is None or self._open >= self._limits.max_connections:
            self.refused += 1
            return _Refused()
        self._open += 1
        return _RequestHandler(self, manager, loop=asyncio.get_running_loop(), **self._handler_options)

    def connection_closed(self) -> None:
        self._open -= 1

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish within the grace, close the rest."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        await self._runner.cleanup()
        if listener is not None:
            await listener.wait_closed()
