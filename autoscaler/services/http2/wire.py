"""HTTP/2 framing (RFC 9113) and the few HPACK (RFC 7541) encodings a gRPC server sends.

Responses are encoded as literal header fields without indexing, so this side never
touches the HPACK dynamic table; only the peer's header blocks need a stateful decoder.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER: Final = struct.Struct(">BHBBI")
"""Length (24 bits, as a high byte and a 16-bit rest), type, flags, stream id."""
FRAME_HEADER_SIZE: Final = 9
DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME: Final = 16_384
MAX_WINDOW: Final = 2**31 - 1
MESSAGE_PREFIX: Final = struct.Struct(">BI")
"""gRPC length-prefixed message: compressed flag, length."""

_SETTING: Final = struct.Struct(">HI")
_UINT32: Final = struct.Struct(">I")
_GOAWAY: Final = struct.Struct(">II")


class FrameType(IntEnum):
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag:
    END_STREAM: Final = 0x1
    ACK: Final = 0x1
    END_HEADERS: Final = 0x4
    PADDED: Final = 0x8
    PRIORITY: Final = 0x20


class Setting(IntEnum):
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ErrorCode(IntEnum):
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    ENHANCE_YOUR_CALM = 0xB


class ProtocolViolationError(Exception):
    """The peer broke the protocol: the connection ends with GOAWAY carrying `code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return FRAME_HEADER.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id) + payload


def settings_frame(settings: dict[Setting, int]) -> bytes:
    return frame(FrameType.SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in settings.items()))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % _SETTING.size:
        raise ProtocolViolationError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload is not a multiple of 6 bytes")
    return [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), _SETTING.size)]


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _UINT32.pack(increment))


def rst_stream(stream_id: int, code: ErrorCode) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, _UINT32.pack(code))


def goaway(last_stream_id: int, code: ErrorCode, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def read_uint31(payload: bytes) -> int:
    (value,) = _UINT32.unpack_from(payload)
    return int(value) & MAX_WINDOW


def unpadded(payload: bytes, flags: int) -> bytes:
    """A DATA or HEADERS payload without its padding."""
    if not flags & Flag.PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolationError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


# --- HPACK, sending side --------------------------------------------------------------


def _integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return _integer(len(value), 7, 0) + value


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, with a new (literal) name."""
    return b"\x00" + _string(name) + _string(value)


def literal_indexed_name(static_index: int, value: bytes) -> bytes:
    """A literal without indexing whose name is an entry of HPACK's static table."""
    return _integer(static_index, 4, 0) + _string(value)


STATUS_200: Final = b"\x88"  # indexed field 8 of the static table
_CONTENT_TYPE_INDEX: Final = 31


def content_type(value: bytes) -> bytes:
    return literal_indexed_name(_CONTENT_TYPE_INDEX, value)


def status_only(code: int) -> bytes:
    """A `:status` other than 200 (for a request that is not gRPC)."""
    return literal_indexed_name(8, str(code).encode())


# --- gRPC-specific header values ----------------------------------------------------------

_TIMEOUT_UNITS: Final = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float | None:
    """Seconds from a `grpc-timeout` header (at most 8 digits and a unit); None if malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


def percent_encode(message: str) -> bytes:
    """`grpc-message` encoding: UTF-8, with bytes outside printable ASCII and '%' as %XX."""
    out = bytearray()
    for byte in message.encode("utf-8", "replace"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)
