"""Listening socket, TLS and shutdown for the lean HTTP/2 gRPC server."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from typing import cast

from autoscaler.services.http2.connection import ConnectionLimits, Http2Connection
from autoscaler.services.rpc import RequestObserver, RpcMethod

_log = logging.getLogger(__name__)
_HANDSHAKE_SECONDS = 10.0


class Http2GrpcServer:
    """Serves `methods` on one address; `tls` returns the SSL context for each new connection."""

    def __init__(
        self,
        methods: Iterable[RpcMethod],
        *,
        limits: ConnectionLimits,
        observer: RequestObserver | None,
        tls: Callable[[], ssl.SSLContext] | None,
    ) -> None:
        self._router = {method.path.encode(): method for method in methods}
        self._limits = limits
        self._observer = observer
        self._tls = tls
        self._connections: set[Http2Connection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._handshaking: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        # No SO_REUSEPORT: a second daemon on the same port must fail, not share it.
        self._server = await loop.create_server(self._accept, host, port, reuse_port=False, backlog=1024)
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self) -> asyncio.Protocol:
        if self._tls is None:
            return self._new_connection()
        return _AwaitingHandshake(self)

    def _new_connection(self) -> Http2Connection:
        connection = Http2Connection(self._router, self._limits, self._observer, self._connections.discard)
        self._connections.add(connection)
        return connection

    def start_handshake(self, transport: asyncio.Transport) -> None:
        self._handshaking.add(transport)
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        assert self._tls is not None
        peer = transport.get_extra_info("peername")
        connection = self._new_connection()
        try:
            context = self._tls()
            async with asyncio.timeout(_HANDSHAKE_SECONDS):
                secure = await asyncio.get_running_loop().start_tls(transport, connection, context, server_side=True)
        except (OSError, ssl.SSLError, TimeoutError, ValueError) as error:
            _log.info("TLS handshake with %s failed: %s", peer, error or type(error).__name__)
            self._connections.discard(connection)
            transport.abort()
            return
        finally:
            self._handshaking.discard(transport)
        if secure is None:  # the loop closed the connection during the handshake
            self._connections.discard(connection)
            return
        ssl_object = secure.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            _log.info("TLS client %s did not negotiate HTTP/2 (ALPN h2); closing", peer)
            self._connections.discard(connection)
            secure.abort()
            return
        connection.connection_made(secure)

    def start_drain(self) -> None:
        """Stop accepting and send GOAWAY: clients finish their calls and reconnect elsewhere."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.start_drain()

    async def stop(self, grace: float | None) -> None:
        self.start_drain()
        for task in self._handshakes:
            task.cancel()
        for transport in self._handshaking:  # including those whose task never got to run
            transport.abort()
        drained = [connection.wait_drained() for connection in self._connections]
        if drained:
            _, pending = await asyncio.wait([asyncio.ensure_future(wait) for wait in drained], timeout=grace)
            for waiter in pending:
                waiter.cancel()
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()


class _AwaitingHandshake(asyncio.Protocol):
    """Holds an accepted TLS connection's bytes until the handshake takes it over."""

    def __init__(self, server: Http2GrpcServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        transport.pause_reading()  # start_tls resumes it once its own protocol is in place
        self._server.start_handshake(transport)
