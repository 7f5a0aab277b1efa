"""A Kubernetes Service on loopback: one TCP port in front of several backends.

It plays what kube-proxy does for KEDA's connection to the scaler's Service, at the
level that matters for a failover: a new connection goes to a live backend, taken in
turn (round robin); a backend that refuses the connection is skipped, as a Service
skips an endpoint that is not ready; when a backend dies, the connections it held
are closed on the client side too, and the client connects again, to whichever
backend is live then. Payload is copied as bytes: gRPC over HTTP/2 passes through
untouched. The bytes each backend received are counted, so a test can tell which
backend served the client during an interval.

The event loop runs in its own thread, so a synchronous test drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Self

_CHUNK = 64 * 1024


class ServiceForwarder:
    """Listens on ``127.0.0.1:port``; ``backends`` maps a name to a port on 127.0.0.1."""

    def __init__(self, backends: Mapping[str, int]) -> None:
        if not backends:
            raise ValueError("a Service needs at least one backend")
        self._backends = dict(backends)
        self._names = list(backends)
        self._next = 0
        self._lock = threading.Lock()
        self._received: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="service-forwarder", daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def received(self) -> dict[str, int]:
        """Bytes each backend has received from clients so far."""
        with self._lock:
            return {name: self._received[name] for name in self._names}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):  # both ends of every connection: its copies end
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _connect(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next live backend in turn, or None when none accepts."""
        for _ in self._names:
            name = self._names[self._next]
            self._next = (self._next + 1) % len(self._names)
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self._backends[name])
                return name, reader, writer
        return None

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(client_reader, client_writer)
        finally:
            self._handlers.discard(handler)

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:  # no live backend: the client sees its connection close, as with no endpoints
            client_writer.close()
            return
        name, backend_reader, backend_writer = upstream
        self._connections |= {client_writer, backend_writer}
        copies = [
            asyncio.ensure_future(self._copy(client_reader, backend_writer, count_for=name)),
            asyncio.ensure_future(self._copy(backend_reader, client_writer, count_for=None)),
        ]
        try:
            # Either side ending ends the connection: a dead backend drops its clients' connections.
            await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for copy in copies:
                copy.cancel()
            for writer in (client_writer, backend_writer):
                writer.close()
                self._connections.discard(writer)

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count_for: str | None) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(_CHUNK):
                if count_for is not None:
                    with self._lock:
                        self._received[count_for] += len(chunk)
                writer.write(chunk)
                await writer.drain()
