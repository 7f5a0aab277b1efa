"""Pieces of the hostile-peer tests: the daemon under attack, an honest KEDA-like caller, raw HTTP/2.

- `Daemon`: `tests.security.grpc_daemon` in its own process, so its memory (VmRSS,
  sampled every 50 ms) is the server's alone, not the attacker's.
- `HonestCaller`: GetMetrics for the honest targets every 20 ms from a thread, on one
  connection as KEDA holds it; each call's latency and status are kept by phase
  (before, during and after the attack), and the report prints each phase's p99.
- Raw HTTP/2 frames from `hyperframe` and header blocks from `hpack` (both come with
  the `h2` test dependency), so an attacker can send what a correct client never would.

Every loop an attack runs is bounded in count and in time. Everything is on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import hpack
import numpy as np
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from autoscaler._generated import externalscaler_pb2 as pb2

REPOSITORY = Path(__file__).resolve().parents[2]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GET_METRICS = "/externalscaler.ExternalScaler/GetMetrics"
STREAM_IS_ACTIVE = "/externalscaler.ExternalScaler/StreamIsActive"
GET_METRIC_SPEC = "/externalscaler.ExternalScaler/GetMetricSpec"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
HONEST_TIMEOUT_SECONDS = 5.0
PHASES = ("before", "during", "after")


def _rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Daemon:
    """The server under attack, in its own process; its RSS is sampled while it runs."""

    def __init__(self, *, max_targets: int = 10_000, log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.security.grpc_daemon", "--max-targets", str(max_targets)],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the daemon did not start: {log.read_text()[-3000:]}")
        started = json.loads(line)
        self.port: int = started["port"]
        self.requests = [pb2.GetMetricsRequest.FromString(bytes.fromhex(raw)) for raw in started["requests"]]
        self.peak_kib = self.baseline_kib = self.rss_kib()
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()

    def rss_kib(self) -> int:
        return _rss_kib(self._process.pid)

    def _sample(self) -> None:
        while self._sampling:
            self.peak_kib = max(self.peak_kib, self.rss_kib())
            time.sleep(0.05)

    def reset_peak(self) -> None:
        self.baseline_kib = self.peak_kib = self.rss_kib()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        self._sampling = False
        self._sampler.join(timeout=5)
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        assert self._process.stdout is not None
        self._process.stdout.close()
        self._log_file.close()


@dataclass
class HonestCaller:
    """GetMetrics every `interval` seconds on one connection, recorded per phase."""

    port: int
    requests: list[pb2.GetMetricsRequest]
    interval: float = 0.02
    phase: str = "before"
    latencies: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    failures: dict[str, list[str]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    _running: bool = True

    def __post_init__(self) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self._call = self._channel.unary_unary(
            GET_METRICS, request_serializer=pb2.GetMetricsRequest.SerializeToString,
            response_deserializer=pb2.GetMetricsResponse.FromString,
        )  # fmt: skip
        self._call(self.requests[0], timeout=HONEST_TIMEOUT_SECONDS)  # connected before any attack
        self._thread = threading.Thread(target=self._run, name="honest-caller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index = 0
        while self._running:
            request = self.requests[index % len(self.requests)]
            index += 1
            phase, started = self.phase, time.perf_counter()
            try:
                response = self._call(request, timeout=HONEST_TIMEOUT_SECONDS)
                assert response.metricValues[0].metricValue >= 0
                self.latencies[phase].append(time.perf_counter() - started)
            except grpc.RpcError as error:
                self.failures[phase].append(f"{error.code()}: {error.details()}")
            time.sleep(self.interval)

    def enter(self, phase: str, *, seconds: float = 0.0) -> None:
        """Record the next calls under `phase`, after `seconds` more of the current one."""
        time.sleep(seconds)
        self.phase = phase

    def stop(self) -> None:
        self._running = False
        self._thread.join(timeout=HONEST_TIMEOUT_SECONDS + 1)
        self._channel.close()

    def p99_ms(self, phase: str) -> float:
        values = self.latencies[phase]
        return float(np.percentile(values, 99)) * 1000 if values else float("nan")

    def report(self) -> str:
        return ", ".join(
            f"{phase} p99 {self.p99_ms(phase):.1f} ms ({len(self.latencies[phase])} ok, "
            f"{len(self.failures[phase])} failed)"
            for phase in PHASES
        )


# --- raw HTTP/2 ---------------------------------------------------------------------------


def header_block(path: str, *, extra: list[tuple[str, str]] | None = None) -> bytes:
    """A gRPC request's header block, literals only: valid whatever the peer's HPACK table holds."""
    headers = [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"), ("te", "trailers"), *(extra or []),
    ]  # fmt: skip
    encoder = hpack.Encoder()
    encoder.header_table_size = 0  # nothing indexed: every block stands on its own
    return bytes(encoder.encode(headers, huffman=False))


def grpc_message(payload: bytes, *, compressed: bool = False, declared: int | None = None) -> bytes:
    length = len(payload) if declared is None else declared
    return bytes([1 if compressed else 0]) + length.to_bytes(4, "big") + payload


def request_frames(stream_id: int, block: bytes, message: bytes) -> bytes:
    headers = HeadersFrame(stream_id, data=block, flags=["END_HEADERS"])
    data = DataFrame(stream_id, data=message, flags=["END_STREAM"])
    return headers.serialize() + data.serialize()


@dataclass
class RawConnection:
    """A TCP connection that has sent the client preface and acknowledged the server's SETTINGS."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def drain(self, seconds: float = 0.0) -> bool:
        """Read what arrives within `seconds` (0: what is there now) and keep it; False once closed."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.sock.settimeout(max(0.0, deadline - time.monotonic()))  # 0.0: do not block
                try:
                    chunk = self.sock.recv(1 << 20)
                except (BlockingIOError, TimeoutError):
                    return True
                except OSError:
                    return False
                if not chunk:
                    return False
                self.received += chunk
        finally:
            with contextlib.suppress(OSError):
                self.sock.settimeout(5.0)

    def frames(self) -> Iterator[Frame]:
        """The frames received so far (those complete)."""
        view, offset = memoryview(self.received), 0
        while offset + 9 <= len(view):
            frame, length = Frame.parse_frame_header(view[offset : offset + 9])
            if offset + 9 + length > len(view):
                return
            frame.parse_body(view[offset + 9 : offset + 9 + length])
            yield frame
            offset += 9 + length

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def connect(port: int, *, initial_window: int | None = None, handshake: bool = True) -> RawConnection:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection = RawConnection(sock)
    if not handshake:
        return connection
    settings = {} if initial_window is None else {SettingsFrame.INITIAL_WINDOW_SIZE: initial_window}
    connection.send(PREFACE + SettingsFrame(0, settings=settings).serialize())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        connection.drain(0.05)
        if any(isinstance(frame, SettingsFrame) and "ACK" not in frame.flags for frame in connection.frames()):
            break
    connection.send(SettingsFrame(0, flags=["ACK"]).serialize())
    return connection


def goaway_or_reset(connection: RawConnection) -> bool:
    """Whether the server refused: a GOAWAY, a RST_STREAM, or the connection closed."""
    return any(isinstance(frame, GoAwayFrame | RstStreamFrame) for frame in connection.frames())


def grpc_statuses(connection: RawConnection) -> dict[int, int]:
    """grpc-status by stream, from the trailers received (all header blocks decoded in order, as HPACK requires)."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 1 << 16
    statuses: dict[int, int] = {}
    blocks: dict[int, bytearray] = {}
    for frame in connection.frames():
        if isinstance(frame, HeadersFrame | ContinuationFrame):
            blocks.setdefault(frame.stream_id, bytearray()).extend(frame.data)
            if "END_HEADERS" in frame.flags:
                headers = dict(decoder.decode(bytes(blocks.pop(frame.stream_id)), raw=True))
                if b"grpc-status" in headers:
                    statuses[frame.stream_id] = int(headers[b"grpc-status"])
    return statuses


__all__ = [
    "GET_METRICS",
    "GET_METRIC_SPEC",
    "REFLECTION",
    "STREAM_IS_ACTIVE",
    "ContinuationFrame",
    "Daemon",
    "DataFrame",
    "GoAwayFrame",
    "HeadersFrame",
    "HonestCaller",
    "PingFrame",
    "RawConnection",
    "RstStreamFrame",
    "SettingsFrame",
    "WindowUpdateFrame",
    "connect",
    "goaway_or_reset",
    "grpc_message",
    "grpc_statuses",
    "header_block",
    "request_frames",
]
