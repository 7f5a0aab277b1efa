"""HPACK (RFC 7541) decoding of the peer's header blocks, lean enough for the hot path.

A gRPC client sends eight or so header fields per call, nearly all indexed; decoding
them is a table lookup each. The static table and the Huffman code come from the
`hpack` package; the representation parsing and the dynamic table are done here.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from autoscaler.services.http2.wire import ErrorCode, ProtocolViolationError

_STATIC: tuple[tuple[bytes, bytes], ...] = tuple(HeaderTable.STATIC_TABLE)
_ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1

Header = tuple[bytes, bytes]


class HeaderDecoder:
    """One connection's decoding context: the dynamic table the peer's encoder maintains."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 16 * 1024) -> None:
        self._allowed_table_size = max_table_size  # SETTINGS_HEADER_TABLE_SIZE we announce
        self._table_size_limit = max_table_size
        self._max_header_list_size = max_header_list_size
        self._dynamic: deque[Header] = deque()
        self._table_size = 0

    def decode(self, block: bytes) -> list[Header]:
        headers: list[Header] = []
        position, end, list_size = 0, len(block), 0
        while position < end:
            first = block[position]
            if first & 0x80:  # indexed field
                index, position = _integer(block, position, 7)
                header = self._entry(index)
            elif first & 0x40:  # literal with incremental indexing
                header, position = self._literal(block, position, 6)
                self._insert(header)
            elif first & 0x20:  # dynamic table size update
                size, position = _integer(block, position, 5)
                if size > self._allowed_table_size:
                    raise _error(f"table size update to {size} above the announced {self._allowed_table_size}")
                self._table_size_limit = size
                self._evict()
                continue
            else:  # literal without indexing, or never indexed
                header, position = self._literal(block, position, 4)
            list_size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
            if list_size > self._max_header_list_size:
                raise ProtocolViolationError(ErrorCode.ENHANCE_YOUR_CALM, "header list larger than announced")
            headers.append(header)
        return headers

    def _literal(self, block: bytes, position: int, prefix_bits: int) -> tuple[Header, int]:
        index, position = _integer(block, position, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, position = _string(block, position)
        value, position = _string(block, position)
        return (name, value), position

    def _entry(self, index: int) -> Header:
        if 0 < index <= len(_STATIC):
            return _STATIC[index - 1]
        dynamic_index = index - len(_STATIC) - 1
        if 0 <= dynamic_index < len(self._dynamic):
            return self._dynamic[dynamic_index]
        raise _error(f"header index {index} is not in the table")

    def _insert(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        if size > self._table_size_limit:  # an entry larger than the table empties it
            self._dynamic.clear()
            self._table_size = 0
            return
        self._dynamic.appendleft(header)
        self._table_size += size
        self._evict()

    def _evict(self) -> None:
        while self._table_size > self._table_size_limit:
            name, value = self._dynamic.pop()
            self._table_size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        if position >= len(block) or shift > 28:
            raise _error("truncated or oversized integer")
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def _string(block: bytes, position: int) -> tuple[bytes, int]:
    if position >= len(block):
        raise _error("truncated string")
    huffman = block[position] & 0x80
    length, position = _integer(block, position, 7)
    end = position + length
    if end > len(block):
        raise _error("string runs past the header block")
    raw = block[position:end]
    if not huffman:
        return raw, end
    try:
        return decode_huffman(raw), end
    except HPACKDecodingError as error:
        raise _error(f"bad Huffman code: {error}") from None


def _error(message: str) -> ProtocolViolationError:
    return ProtocolViolationError(ErrorCode.COMPRESSION_ERROR, message)
