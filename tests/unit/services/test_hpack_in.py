"""Our HPACK decoder against the `hpack` package's encoder, an independent implementation.

Header lists are encoded one after another on one connection, so the dynamic table the
encoder fills (with Huffman coding, indexing and evictions) must be mirrored exactly.
"""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.services.http2.hpack_in import HeaderDecoder
from autoscaler.services.http2.wire import ErrorCode, ProtocolViolationError

NAMES = st.sampled_from([b":path", b"content-type", b"grpc-timeout", b"user-agent", b"x-custom", b"te"])
VALUES = st.binary(min_size=0, max_size=300).map(lambda raw: bytes(byte % 94 + 33 for byte in raw))
HEADER_LISTS = st.lists(st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=8), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(header_lists=HEADER_LISTS, table_size=st.sampled_from([0, 256, 4096]), huffman=st.booleans())
def test_decodes_what_an_independent_encoder_sends(
    header_lists: list[list[tuple[bytes, bytes]]], table_size: int, huffman: bool
) -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    encoder.header_table_size = table_size  # announced to us as a table size update
    for headers in header_lists:
        assert decoder.decode(encoder.encode(headers, huffman=huffman)) == headers


def test_never_indexed_fields_are_decoded_and_not_stored() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    secret = hpack.NeverIndexedHeaderTuple(b"authorization", b"Bearer token")
    assert decoder.decode(encoder.encode([secret])) == [(b"authorization", b"Bearer token")]
    assert decoder.decode(encoder.encode([secret])) == [(b"authorization", b"Bearer token")]


@pytest.mark.parametrize(
    ("block", "code"),
    [
        (b"\xff", ErrorCode.COMPRESSION_ERROR),  # an index whose continuation never comes
        (b"\xbe", ErrorCode.COMPRESSION_ERROR),  # dynamic index 62 with an empty table
        (b"\x80", ErrorCode.COMPRESSION_ERROR),  # index 0
        (b"\x40\x05ab", ErrorCode.COMPRESSION_ERROR),  # a name running past the block
        (b"\x3f\xe2\x1f", ErrorCode.COMPRESSION_ERROR),  # table size update to 4097, above the announced 4096
        (b"\x00\x81\xff", ErrorCode.COMPRESSION_ERROR),  # a Huffman string padded with a full byte
        (hpack.Encoder().encode([(b"a", b"x" * 20_000)]), ErrorCode.ENHANCE_YOUR_CALM),  # a header list too large
    ],
)
def test_malformed_blocks_are_connection_errors(block: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolViolationError) as raised:
        HeaderDecoder().decode(block)
    assert raised.value.code is code
