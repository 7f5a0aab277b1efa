"""Hostile peers against the default gRPC server, each while an honest caller keeps calling.

Every test starts the daemon's gRPC side (real engine, default `GrpcServerSettings`) in
its own process, starts an honest GetMetrics caller on its own connection, and then
attacks from raw HTTP/2 (or grpcio where the attack is well-formed gRPC). It asserts:

- every honest call before, during and after the attack is answered (OK, within 5 s),
  and prints each phase's p99 (run with -s to see them);
- the daemon's peak RSS during the attack stays within a bound over its RSS before;
- what the attack itself gets back (refusals, closed connections) where that is the point.

Counts are the issue's where it names them (20,000 reset streams, 2,000 idle
connections, 32k StreamIsActive, a 16 MiB message, 4 MB keys); each loop is also
bounded in time, so a server that stops reading fails the test instead of hanging it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from autoscaler._generated import externalscaler_pb2 as pb2
from autoscaler._generated import externalscaler_pb2_grpc as pb2_grpc
from tests.security.grpc_daemon import honest_metadata
from tests.security.hostile import (
    GET_METRIC_SPEC,
    GET_METRICS,
    REFLECTION,
    STREAM_IS_ACTIVE,
    ContinuationFrame,
    Daemon,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    HonestCaller,
    PingFrame,
    RawConnection,
    RstStreamFrame,
    SettingsFrame,
    connect,
    goaway_or_reset,
    grpc_message,
    grpc_statuses,
    header_block,
    request_frames,
)

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class Siege:
    """One daemon, one honest caller, and the phases of one attack."""

    def __init__(self, daemon: Daemon, caller: HonestCaller) -> None:
        self.daemon = daemon
        self.caller = caller
        self.notes: list[str] = []

    def attack(
        self,
        name: str,
        run: Callable[[], str],
        *,
        rss_bound_mib: float,
        after_seconds: float = 1.5,
        shed_share: float = 0.0,
    ) -> None:
        """Run `run` between a second of honest calls before and `after_seconds` after; check both bounds.

        `shed_share`: the share of honest calls during the attack that grpc core may shed
        with CANCELLED (never another failure, never before or after the attack).
        """
        self.caller.enter("before", seconds=0.0)
        time.sleep(1.0)
        self.daemon.reset_peak()
        baseline = self.daemon.baseline_kib
        self.caller.enter("during")
        started = time.monotonic()
        outcome = run()
        took = time.monotonic() - started
        self.caller.enter("after")
        time.sleep(after_seconds)
        self.caller.stop()
        grown_mib = (self.daemon.peak_kib - baseline) / 1024
        print(
            f"\n[{name}] {outcome}; attack {took:.1f} s; daemon RSS {baseline / 1024:.0f} MiB before, "
            f"peak +{grown_mib:.0f} MiB (bound {rss_bound_mib:g}); honest GetMetrics: {self.caller.report()}"
        )
        assert self.daemon.alive, "the daemon died"
        during = self.caller.failures["during"]
        shed = [failure for failure in during if failure.startswith("StatusCode.CANCELLED")]
        calls_during = len(during) + len(self.caller.latencies["during"])
        assert len(shed) <= shed_share * calls_during, f"{len(shed)} of {calls_during} honest calls shed"
        for phase, failures in self.caller.failures.items():
            unexpected = [failure for failure in failures if phase != "during" or failure not in shed]
            assert not unexpected, f"honest calls failed {phase} the attack: {unexpected[:3]}"
        for phase, latencies in self.caller.latencies.items():
            assert latencies, f"no honest call was answered {phase} the attack"
        assert grown_mib <= rss_bound_mib, f"RSS grew {grown_mib:.0f} MiB, above {rss_bound_mib} MiB"


@pytest.fixture
def siege(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Siege]:
    """The daemon (its target cap from indirect parametrisation, else the default) and an honest caller."""
    daemon = Daemon(log=tmp_path / "daemon.log", max_targets=getattr(request, "param", 10_000))
    caller = HonestCaller(daemon.port, daemon.requests)
    try:
        yield Siege(daemon, caller)
    finally:
        caller.stop()
        daemon.stop()


def honest_request_bytes(siege: Siege) -> bytes:
    return bytes(siege.daemon.requests[0].SerializeToString())


def until(seconds: float) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() < deadline


# --- HTTP/2 -------------------------------------------------------------------------------


def test_rapid_reset(siege: Siege) -> None:
    """CVE-2023-44487: 20,000 streams opened and reset at once, reconnecting when sent away."""
    block, message = header_block(GET_METRICS), grpc_message(honest_request_bytes(siege))

    def run() -> str:
        sent, connections, refused, in_time = 0, 0, 0, until(60)
        while sent < 20_000 and in_time():
            connection, connections = connect(siege.daemon.port), connections + 1
            stream_id = 1
            while sent < 20_000 and in_time():
                batch = b"".join(
                    request_frames(stream_id + 2 * i, block, message)
                    + RstStreamFrame(stream_id + 2 * i, error_code=8).serialize()
                    for i in range(200)
                )
                stream_id += 400
                if not connection.send(batch) or not connection.drain():
                    break
                sent += 200
            refused += goaway_or_reset(connection)
            connection.close()
        assert sent >= 20_000, f"only {sent} streams sent in time"
        return f"{sent} streams opened and reset over {connections} connections"

    siege.attack("rapid reset", run, rss_bound_mib=150)


def test_continuation_flood(siege: Siege) -> None:
    """HEADERS without END_HEADERS, then CONTINUATION frames: 64 MiB of fragments or 200,000 empty ones."""

    def run() -> str:
        outcomes = []
        for fragment, frames in ((b"\x00" * 16_000, 4_200), (b"", 200_000)):
            connection, in_time = connect(siege.daemon.port), until(20)
            sent = 0
            opened = HeadersFrame(1, data=header_block(GET_METRICS)[:20]).serialize()
            connection.send(opened)
            continuation = ContinuationFrame(1, data=fragment).serialize()
            while sent < frames and in_time():
                if not connection.send(continuation * 100):
                    break
                sent += 100
                connection.drain()
            closed = not connection.drain(1.0)
            answers = sorted(
                {
                    type(frame).__name__
                    for frame in connection.frames()
                    if isinstance(frame, GoAwayFrame | RstStreamFrame)
                }
            )
            outcomes.append(
                f"{sent} CONTINUATION frames of {len(fragment)} bytes sent: {', '.join(answers) or 'no refusal'}"
                + (", connection closed" if closed else "")
            )
            assert closed or answers, "the server kept taking CONTINUATION frames"
            connection.close()
        return "; ".join(outcomes)

    siege.attack("CONTINUATION flood", run, rss_bound_mib=100)


def test_oversized_header_block(siege: Siege) -> None:
    """A well-formed 1 MiB header block (one 1 MiB value) is refused; the connection's other calls go on."""

    def run() -> str:
        connection = connect(siege.daemon.port)
        block = header_block(GET_METRICS, extra=[("x-padding", "p" * MIB)])
        frames = HeadersFrame(1, data=block[:16_000]).serialize()
        rest = block[16_000:]
        while rest:
            piece, rest = rest[:16_000], rest[16_000:]
            frames += ContinuationFrame(1, data=piece, flags=[] if rest else ["END_HEADERS"]).serialize()
        connection.send(frames)
        connection.drain(2.0)
        refused = goaway_or_reset(connection) or RESOURCE_EXHAUSTED in grpc_statuses(connection).values()
        largest = max((len(frame.serialize()) for frame in connection.frames()), default=0)
        assert refused, "a 1 MiB header block was accepted"
        assert largest <= 9 + 16_384, f"the server sent a frame of {largest} bytes, above the default max frame size"
        connection.close()
        return f"1 MiB header block refused; largest frame back {largest} bytes"

    siege.attack("oversized header block", run, rss_bound_mib=50)


def test_a_peer_that_never_reads(siege: Siege) -> None:
    """4 connections each send 2,000 GetMetrics and never read an answer."""
    block, message = header_block(GET_METRICS), grpc_message(honest_request_bytes(siege))

    def run() -> str:
        connections = [connect(siege.daemon.port) for _ in range(4)]
        sent = 0
        for connection in connections:
            connection.sock.setsockopt(1, 8, 4096)  # SO_RCVBUF: the smallest the kernel allows
            for start in range(0, 2_000, 100):
                frames = b"".join(request_frames(1 + 2 * (start + i), block, message) for i in range(100))
                if not connection.send(frames):
                    break
                sent += 100
        time.sleep(3.0)  # answers pile up against the peer's window
        for connection in connections:
            connection.close()
        return f"{sent} calls sent on 4 connections, no answer read"

    siege.attack("never reads", run, rss_bound_mib=100)


def test_a_peer_that_sends_past_the_window(siege: Siege) -> None:
    """24 MiB of DATA on one stream without waiting for WINDOW_UPDATE."""

    def run() -> str:
        connection = connect(siege.daemon.port)
        connection.send(HeadersFrame(1, data=header_block(GET_METRICS), flags=["END_HEADERS"]).serialize())
        chunk = DataFrame(1, data=b"\x00" * 16_000).serialize()
        sent, in_time = 0, until(20)
        while sent < 24 * MIB and in_time():
            if not connection.send(chunk * 16):
                break
            sent += 16 * 16_000
            connection.drain()
        connection.drain(1.0)
        refused = goaway_or_reset(connection)
        connection.close()
        assert refused, "24 MiB past the window got no RST_STREAM or GOAWAY"
        return f"{sent / MIB:.1f} MiB sent without waiting for the 4 MiB window; refused with RST_STREAM/GOAWAY"

    siege.attack("past the window", run, rss_bound_mib=100)


def test_slowloris_idle_connections(siege: Siege) -> None:
    """2,000 connections that never send the preface: all closed by the handshake timeout (10 s)."""

    def run() -> str:
        connections = [connect(siege.daemon.port, handshake=False) for _ in range(2_000)]
        time.sleep(12.0)
        closed = sum(not connection.drain() for connection in connections)
        for connection in connections:
            connection.close()
        assert closed == len(connections), f"{len(connections) - closed} idle connections still open after 12 s"
        return f"{closed} of 2000 idle connections closed by the server within 12 s"

    siege.attack("slowloris", run, rss_bound_mib=100)


def test_thousands_of_connections(siege: Siege) -> None:
    """5,000 connections each opening a call; beyond the cap (128) they are closed, not served."""
    block, message = header_block(GET_METRICS), grpc_message(honest_request_bytes(siege))

    def run() -> str:
        connections: list[RawConnection] = []
        for index in range(5_000):
            connection = connect(siege.daemon.port, handshake=False)
            connection.send(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize() + request_frames(1, block, message)
            )
            connections.append(connection)
            if index % 500 == 499:
                time.sleep(0.05)
        time.sleep(2.0)
        open_now = sum(connection.drain() for connection in connections)
        for connection in connections:
            connection.close()
        assert open_now <= 128, f"{open_now} connections held open, above the cap"
        return f"5000 connections tried, {open_now} held open (cap 128, the honest caller's included)"

    siege.attack("5,000 connections", run, rss_bound_mib=200)


def test_ping_and_settings_floods(siege: Siege) -> None:
    """100,000 PING frames, then 100,000 SETTINGS frames, without reading the answers.

    Pings without calls in flight are strikes (`min_ping_interval_seconds`), so the PING
    flood ends with GOAWAY "too_many_pings"; SETTINGS are acknowledged until the flood ends.
    """

    def run() -> str:
        outcomes = []
        for name, frame in (
            ("PING", PingFrame(0, opaque_data=b"12345678").serialize()),
            ("SETTINGS", SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100}).serialize()),
        ):
            connection, in_time, sent = connect(siege.daemon.port), until(20), 0
            while sent < 100_000 and in_time():
                if not connection.send(frame * 1_000):
                    break
                sent += 1_000
            connection.drain(1.0)
            goaway = next((frame for frame in connection.frames() if isinstance(frame, GoAwayFrame)), None)
            if name == "PING":
                assert goaway is not None, "a PING flood got no GOAWAY"
            answer = "no GOAWAY" if goaway is None else f"GOAWAY {bytes(goaway.additional_data).decode()!r}"
            outcomes.append(f"{sent} {name} frames sent: {answer}")
            connection.close()
        return "; ".join(outcomes)

    siege.attack("PING and SETTINGS floods", run, rss_bound_mib=100)


# --- gRPC framing and paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("length prefix past the body", grpc_message(b"\x0a\x02ab", declared=1_000)),
        ("compressed flag without an encoding", grpc_message(b"\x0a\x02ab", compressed=True)),
    ],
)
def test_malformed_grpc_framing(siege: Siege, case: str, message: bytes) -> None:
    """A malformed call on stream 1 is not answered OK; a good one after it on the same connection is."""

    def run() -> str:
        connection = connect(siege.daemon.port)
        block = header_block(GET_METRICS)
        connection.send(request_frames(1, block, message))
        connection.send(request_frames(3, block, grpc_message(honest_request_bytes(siege))))
        connection.drain(2.0)
        statuses = grpc_statuses(connection)
        connection.close()
        assert statuses.get(1) != 0, f"{case}: answered OK"
        assert statuses.get(3) == 0, f"the good call after it was not answered: {statuses}"
        return f"{case}: grpc-status {statuses.get(1, 'none: the call waits for the rest of its message')}"

    siege.attack(case, run, rss_bound_mib=50)


def test_calls_held_open_by_unfinished_messages(siege: Siege) -> None:
    """32 connections × 256 calls whose message never completes: they end after the request timeout (10 s)."""
    block = header_block(GET_METRICS)
    unfinished = grpc_message(b"\x0a\x02ab", declared=1_000)  # and the stream stays open

    def run() -> str:
        connections = []
        for _ in range(32):
            connection = connect(siege.daemon.port)
            connection.send(
                b"".join(
                    HeadersFrame(1 + 2 * i, data=block, flags=["END_HEADERS"]).serialize()
                    + DataFrame(1 + 2 * i, data=unfinished).serialize()
                    for i in range(256)
                )
            )
            connections.append(connection)
        time.sleep(12.0)
        statuses = Counter[int]()
        for connection in connections:
            connection.drain(0.1)
            statuses.update(grpc_statuses(connection).values())
            connection.close()
        deadline_exceeded = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        assert set(statuses) <= {deadline_exceeded, CANCELLED}, statuses
        assert statuses.total() == 32 * 256, f"{32 * 256 - statuses.total()} calls still open after 12 s"
        return (
            f"{32 * 256} calls held by unfinished messages, all ended within 12 s: "
            f"{statuses[deadline_exceeded]} DEADLINE_EXCEEDED, {statuses[CANCELLED]} shed by grpc core"
        )

    # 8,192 calls arrive within a second, past grpc core's soft limit of calls not yet taken
    # by the server (grpc.server.max_pending_requests, 1,000), where it drops new calls at
    # random with CANCELLED: an honest call that arrives in that second may be one of them
    # (CI saw 1 of 652). KEDA keeps the current replicas on that error and polls again.
    siege.attack("unfinished messages", run, rss_bound_mib=250, shed_share=0.05)


def test_a_16_mib_message(siege: Siege) -> None:
    """A message declaring 16 MiB (the limit is 64 KiB) is refused RESOURCE_EXHAUSTED, not buffered."""

    def run() -> str:
        connection = connect(siege.daemon.port)
        body = grpc_message(b"\x00" * (16 * MIB))
        connection.send(HeadersFrame(1, data=header_block(GET_METRICS), flags=["END_HEADERS"]).serialize())
        sent, in_time = 0, until(20)
        while sent < len(body) and in_time() and not goaway_or_reset(connection) and 1 not in grpc_statuses(connection):
            piece = body[sent : sent + 16_000]
            if not connection.send(DataFrame(1, data=piece).serialize()):
                break
            sent += len(piece)
            connection.drain()
        connection.drain(1.0)
        statuses = grpc_statuses(connection)
        connection.close()
        assert RESOURCE_EXHAUSTED in statuses.values() or goaway_or_reset(connection), f"no refusal: {statuses}"
        return f"{sent / MIB:.2f} MiB of a 16 MiB message sent, answered grpc-status {statuses.get(1)}"

    siege.attack("16 MiB message", run, rss_bound_mib=50)


def test_unknown_paths(siege: Siege) -> None:
    """3 connections × 1,000 calls to distinct 8 KiB unknown paths: UNIMPLEMENTED, no path echoed back."""
    message = grpc_message(b"")

    def run() -> str:
        answered, largest = 0, 0
        for connection_index in range(3):
            connection = connect(siege.daemon.port)
            for batch in range(5):  # 200 at a time: within the 256 streams a connection may open
                first = 200 * batch
                frames = b"".join(
                    request_frames(
                        1 + 2 * (first + i),
                        header_block(f"/x.Y/{connection_index}-{first + i}-" + "p" * 8_192),
                        message,
                    )
                    for i in range(200)
                )
                connection.send(frames)
                connection.drain(0.5)
            statuses = grpc_statuses(connection)
            answered += len(statuses)
            largest = max([largest, *(len(frame.serialize()) for frame in connection.frames())])
            assert set(statuses.values()) <= {grpc.StatusCode.UNIMPLEMENTED.value[0]}, set(statuses.values())
            connection.close()
        assert answered >= 2_900, f"only {answered} of 3,000 unknown-path calls answered"
        assert largest < 1_024, f"an answer frame of {largest} bytes: the path was echoed"
        return f"{answered} unknown-path calls answered UNIMPLEMENTED, largest frame back {largest} bytes"

    siege.attack("unknown paths", run, rss_bound_mib=100)


def test_reflection_stream_without_window(siege: Siege) -> None:
    """A reflection stream whose client grants no window, sent 5,000 requests that each need an answer."""
    request = grpc_message(
        b"\x22" + bytes([len("externalscaler.ExternalScaler")]) + b"externalscaler.ExternalScaler"
    )  # file_containing_symbol (field 4)

    def run() -> str:
        connection = connect(siege.daemon.port, initial_window=0)
        connection.send(HeadersFrame(1, data=header_block(REFLECTION), flags=["END_HEADERS"]).serialize())
        sent, in_time = 0, until(15)
        while sent < 5_000 and in_time():
            if not connection.send(DataFrame(1, data=request * 50).serialize()):
                break
            sent += 50
            connection.drain()
        connection.drain(2.0)
        connection.close()
        return f"{sent} reflection requests sent on a stream with a zero window"

    siege.attack("reflection without window", run, rss_bound_mib=60, after_seconds=3.0)


def test_32k_stream_is_active_streams(siege: Siege) -> None:
    """32,000 StreamIsActive calls over 125 connections: at most 4,096 held, the rest refused.

    Refused by us with RESOURCE_EXHAUSTED (over 192 a connection or 4,096 in all), or shed
    by grpc core with CANCELLED while its queue of calls not yet taken by the server is
    too long (a burst of 32,000 arrives faster than one Python thread takes them).
    """
    block = header_block(STREAM_IS_ACTIVE)
    message = grpc_message(siege.daemon.requests[0].scaledObjectRef.SerializeToString())

    def run() -> str:
        started = time.monotonic()
        connections = []
        for _ in range(125):  # 125 × 256: within the connection cap (128) and the streams a connection may open
            connection = connect(siege.daemon.port)
            connection.send(b"".join(request_frames(1 + 2 * i, block, message) for i in range(256)))
            connection.drain()
            connections.append(connection)
        in_time, statuses, held = until(40), Counter[int](), 0
        while in_time():  # the held streams stay open meanwhile, through the engine's publishes
            time.sleep(1.0)
            for connection in connections:
                connection.drain()
            statuses = Counter(status for connection in connections for status in grpc_statuses(connection).values())
            held = sum(len(streams_answered(connection) - set(grpc_statuses(connection))) for connection in connections)
            if statuses.total() + held >= 32_000:
                break
        for connection in connections:
            connection.close()
        assert set(statuses) <= {RESOURCE_EXHAUSTED, CANCELLED}, statuses
        assert held <= 4_096, f"{held} streams held open, above the cap of 4,096"
        return (
            f"32000 streams asked for: {held} held open, {statuses[RESOURCE_EXHAUSTED]} RESOURCE_EXHAUSTED, "
            f"{statuses[CANCELLED]} shed, {32_000 - held - statuses.total()} unanswered after "
            f"{time.monotonic() - started:.0f} s"
        )

    # A burst this size outruns the one thread that takes calls in, so grpc core sheds some
    # honest calls with it (CANCELLED: KEDA keeps the current replicas and polls again).
    siege.attack("32k StreamIsActive", run, rss_bound_mib=250, shed_share=0.25)


# --- well-formed calls with hostile content ---------------------------------------------------


def stub(siege: Siege) -> tuple[grpc.Channel, pb2_grpc.ExternalScalerStub]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{siege.daemon.port}",
        options=[("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)],
    )
    return channel, pb2_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]


def code_of(call: Callable[..., object], request: object) -> grpc.StatusCode:
    try:
        call(request, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def streams_answered(connection: RawConnection) -> set[int]:
    """Streams that have received a message (DATA): for StreamIsActive, the first answer of a held stream."""
    return {frame.stream_id for frame in connection.frames() if isinstance(frame, DataFrame) and frame.data}


def with_key(key: str) -> pb2.ScaledObjectRef:
    return pb2.ScaledObjectRef(name="a", namespace="x", scalerMetadata={key: "v"})


def test_4mb_metadata_keys(siege: Siege) -> None:
    """39 requests with a 4 MB metadata key (the review's +854 MB), and 1,000 with distinct 60 KB ones."""

    def run() -> str:
        channel, scaler = stub(siege)
        with channel:
            huge = [code_of(scaler.GetMetricSpec, with_key(f"{i}" + "k" * 4_000_000)) for i in range(39)]
            large = [code_of(scaler.GetMetricSpec, with_key(f"{i}" + "k" * 60_000)) for i in range(1_000)]
        assert set(huge) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert set(large) == {grpc.StatusCode.INVALID_ARGUMENT}
        return "39 × 4 MB keys: RESOURCE_EXHAUSTED; 1000 × 60 KB keys: INVALID_ARGUMENT"

    siege.attack("4 MB metadata keys", run, rss_bound_mib=100)


@pytest.mark.parametrize("siege", [2_000], indirect=True, ids=["cap 2000"])
def test_registration_flood_across_namespaces(siege: Siege) -> None:
    """With the daemon's target cap at 2,000, 2,050 new names over 5 namespaces; a real
    ScaledObject in another namespace still registers. (The review's 10,050 against 10,000
    is the same flood scaled: each registered target costs the engine about 150 KiB here.)"""

    def run() -> str:
        channel, scaler = stub(siege)
        admitted, refused = 0, 0
        with channel:
            futures = []
            for index in range(2_050):
                ref = pb2.ScaledObjectRef(
                    name=f"flood-{index}", namespace=f"tenant-{index % 5}", scalerMetadata=honest_metadata(f"f{index}")
                )
                futures.append(scaler.GetMetricSpec.future(ref, timeout=60))
                if len(futures) >= 200:
                    for future in futures:
                        try:
                            future.result()
                            admitted += 1
                        except grpc.RpcError as error:
                            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
                            refused += 1
                    futures.clear()
            for future in futures:
                try:
                    future.result()
                    admitted += 1
                except grpc.RpcError:
                    refused += 1
            real = pb2.ScaledObjectRef(name="real", namespace="newcomer", scalerMetadata=honest_metadata("real"))
            assert code_of(scaler.GetMetricSpec, real) is grpc.StatusCode.OK
        assert admitted <= 1_800, admitted
        return f"{admitted} flood targets admitted, {refused} refused; a new namespace's ScaledObject registered"

    siege.attack("registration flood", run, rss_bound_mib=400, after_seconds=2.0)


def test_a_newline_in_a_target_name_forges_no_log_line(siege: Siege) -> None:
    forged = "llm\nerror   autoscaler.engine: plan changed target=honest/victim replicas=0"

    def run() -> str:
        channel, scaler = stub(siege)
        with channel:
            ref = pb2.ScaledObjectRef(name=forged, namespace="prod", scalerMetadata=honest_metadata("nl"))
            assert code_of(scaler.GetMetricSpec, ref) is grpc.StatusCode.OK
        time.sleep(0.5)
        log = siege.daemon.log.read_text()
        assert "target=prod/llm\\nerror" in log, "the registration was not logged"
        assert not re.search(r"^error\s+autoscaler\.engine: plan changed target=honest/victim", log, re.MULTILINE)
        return "a target name with a newline was logged escaped, on one line"

    siege.attack("newline in a target name", run, rss_bound_mib=50)


def test_get_metric_spec_on_the_raw_path_is_answered(siege: Siege) -> None:
    """The raw client's requests are well-formed: a check that refusals above are the server's choice."""

    def run() -> str:
        connection = connect(siege.daemon.port)
        ref = siege.daemon.requests[0].scaledObjectRef.SerializeToString()
        connection.send(request_frames(1, header_block(GET_METRIC_SPEC), grpc_message(ref)))
        connection.drain(2.0)
        statuses = grpc_statuses(connection)
        connection.close()
        assert statuses == {1: 0}, statuses
        return "a raw well-formed GetMetricSpec is answered OK"

    siege.attack("raw control", run, rss_bound_mib=20)
