"""The chunk framing reader on its own: lengths, the final-chunk indicator, limits."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave.protocol._chunk_reader import ChunkReader
from enclave.protocol._varint import encode_varint
from enclave.protocol.errors import MalformedMessageError, TruncatedMessageError

TAG = 16
MAX_SEALED = 16384 + TAG


def frame(chunks: list[bytes], final: bytes) -> bytes:
    return b"".join(encode_varint(len(c)) + c for c in chunks) + b"\x00" + final


def test_splits_non_final_chunks_and_keeps_the_final_one():
    chunks = [b"a" * 17, b"b" * 100, b"c" * 300]
    reader = ChunkReader(MAX_SEALED, TAG)
    assert reader.feed(frame(chunks, b"f" * 16)) == chunks
    assert reader.in_final
    assert reader.final_chunk() == b"f" * 16


def test_non_minimal_length_encodings_are_accepted():
    # draft section 6: the choice between equivalent varint encodings is not authenticated
    body = b"x" * 20
    data = bytes([0x80, 0, 0, 20]) + body + bytes([0x40, 0]) + b"y" * 16
    reader = ChunkReader(MAX_SEALED, TAG)
    assert reader.feed(data) == [body]
    assert reader.final_chunk() == b"y" * 16


@given(st.data())
def test_any_split_of_the_stream_yields_the_same_chunks(data):
    chunks = data.draw(st.lists(st.binary(min_size=TAG + 1, max_size=200), max_size=5))
    final = data.draw(st.binary(min_size=TAG, max_size=100))
    wire = frame(chunks, final)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    reader = ChunkReader(MAX_SEALED, TAG)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += reader.feed(wire[start:end])
    assert got == chunks
    assert reader.final_chunk() == final


def test_chunk_at_the_limit_is_accepted_and_one_byte_more_is_not():
    reader = ChunkReader(MAX_SEALED, TAG)
    assert reader.feed(encode_varint(MAX_SEALED) + b"z" * MAX_SEALED) == [b"z" * MAX_SEALED]
    with pytest.raises(MalformedMessageError, match="maximum chunk size"):
        ChunkReader(MAX_SEALED, TAG).feed(encode_varint(MAX_SEALED + 1))


def test_oversized_varint_is_rejected_before_its_body_arrives():
    with pytest.raises(MalformedMessageError, match="maximum chunk size"):
        ChunkReader(MAX_SEALED, TAG).feed(bytes.fromhex("ffffffffffffffff"))


def test_final_chunk_over_the_limit_is_rejected():
    reader = ChunkReader(MAX_SEALED, TAG)
    reader.feed(b"\x00" + b"q" * MAX_SEALED)
    with pytest.raises(MalformedMessageError, match="final chunk larger"):
        reader.feed(b"q")


@pytest.mark.parametrize("length", [1, TAG - 1, TAG])
def test_non_final_chunk_without_plaintext_is_rejected(length):
    with pytest.raises(MalformedMessageError, match="no plaintext"):
        ChunkReader(MAX_SEALED, TAG).feed(encode_varint(length) + b"\x00" * length)


def test_missing_final_chunk_is_truncation():
    reader = ChunkReader(MAX_SEALED, TAG)
    reader.feed(encode_varint(20) + b"x" * 20)
    with pytest.raises(TruncatedMessageError, match="before the final chunk"):
        reader.final_chunk()


def test_stream_ending_inside_a_chunk_is_truncation():
    reader = ChunkReader(MAX_SEALED, TAG)
    assert reader.feed(encode_varint(20) + b"x" * 19) == []
    with pytest.raises(TruncatedMessageError):
        reader.final_chunk()


def test_final_chunk_shorter_than_a_tag_is_truncation():
    reader = ChunkReader(MAX_SEALED, TAG)
    reader.feed(b"\x00" + b"x" * (TAG - 1))
    with pytest.raises(TruncatedMessageError, match="shorter than an AEAD tag"):
        reader.final_chunk()
