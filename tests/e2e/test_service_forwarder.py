"""The failover test's stand-in for a Service: round robin, a dead backend skipped and its clients dropped."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.service_forwarder import ServiceForwarder


class Backend(socketserver.ThreadingTCPServer):
    """Answers each read with its name and the bytes read; `kill` closes everything it holds, as a dead process."""

    daemon_threads = True

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.held: list[socket.socket] = []
        super().__init__(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def kill(self) -> None:
        self.shutdown()
        self.server_close()
        for held in self.held:
            with contextlib.suppress(OSError):  # one its client closed is closed already
                held.shutdown(socket.SHUT_RDWR)
            held.close()


class Handler(socketserver.BaseRequestHandler):
    server: Backend

    def handle(self) -> None:
        self.server.held.append(self.request)
        while data := self.request.recv(1024):
            self.request.sendall(self.server.name + b":" + data)


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    started = {"a": Backend(b"a"), "b": Backend(b"b")}
    yield started
    for backend in started.values():
        if backend.socket.fileno() != -1:
            backend.kill()


def exchange(port: int, payload: bytes) -> tuple[socket.socket, bytes]:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.sendall(payload)
    return connection, connection.recv(1024)


def test_connections_go_round_robin_and_bytes_are_counted_per_backend(backends: dict[str, Backend]) -> None:
    with ServiceForwarder({name: b.port for name, b in backends.items()}) as service:
        first, first_answer = exchange(service.port, b"one")
        second, second_answer = exchange(service.port, b"three")
        assert (first_answer, second_answer) == (b"a:one", b"b:three")
        assert service.received() == {"a": 3, "b": 5}
        first.close()
        second.close()


def test_a_dead_backend_drops_its_clients_and_new_connections_go_to_the_live_one(
    backends: dict[str, Backend],
) -> None:
    with ServiceForwarder({name: b.port for name, b in backends.items()}) as service:
        on_a, _ = exchange(service.port, b"x")
        backends["a"].kill()
        assert on_a.recv(1024) == b"", "the client's connection must close when its backend dies"
        answers = []
        for _ in range(2):  # whichever turn it is, the dead backend is skipped
            connection, answer = exchange(service.port, b"y")
            answers.append(answer)
            connection.close()
        assert answers == [b"b:y", b"b:y"]
        on_a.close()
