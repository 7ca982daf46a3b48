"""Chunked OHTTP properties: arbitrary bodies under arbitrary chunkings and arbitrary splits of
the wire bytes round-trip; arbitrary bytes make the decoders raise only ProtocolError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enclave.protocol.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
    ChunkedResponseEncoder,
)
from enclave.protocol.errors import ProtocolError
from enclave.protocol.hpke import Suite
from enclave.protocol.ohttp import KeyStore, generate_default_key_configs

STORE = KeyStore(generate_default_key_configs())
ALL_SUITES = [(config, suite) for config in STORE.active_configs for suite in config.suites()]


def pieces_of(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(body)})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if b > a]


def feed_split(decoder, wire: bytes, cuts: list[int]) -> bytes:
    points = sorted(c for c in cuts if 0 <= c <= len(wire))
    out = b""
    for a, b in zip([0, *points], [*points, len(wire)], strict=True):
        out += b"".join(decoder.feed(memoryview(wire)[a:b]))
    return out + decoder.finish()


@given(
    choice=st.sampled_from(ALL_SUITES),
    body=st.binary(max_size=3000),
    body_cuts=st.lists(st.integers(0, 3000), max_size=6),
    final_carries_data=st.booleans(),
    wire_cuts=st.lists(st.integers(0, 4000), max_size=10),
)
@settings(max_examples=60, deadline=None)
def test_request_and_response_round_trip(choice, body, body_cuts, final_carries_data, wire_cuts):
    config, suite = choice
    encoder = ChunkedRequestEncoder(config, suite=suite)
    pieces = pieces_of(body, body_cuts)
    last = pieces.pop() if final_carries_data and pieces else b""
    wire = encoder.header + b"".join(encoder.seal_chunk(p) for p in pieces)
    wire += encoder.seal_chunk(last, final=True)

    decoder = ChunkedRequestDecoder(STORE)
    assert feed_split(decoder, wire, wire_cuts) == body
    assert decoder.is_complete
    assert decoder.suite == suite

    response = decoder.response_encoder()
    back = response.header + b"".join(response.seal_chunk(p) for p in pieces[::-1])
    back += response.seal_chunk(last, final=True)
    expected = b"".join(pieces[::-1]) + last
    assert feed_split(encoder.response_decoder(), back, wire_cuts) == expected


def _random_request_inputs():
    headers = [config.key_id.to_bytes(1, "big") for config in STORE.active_configs]
    headers += [
        ChunkedRequestEncoder(config, suite=suite).header[: 7 + n]
        for config, suite in ALL_SUITES[:2]
        for n in (0, 32, 1120)
    ]
    prefix = st.sampled_from([b"", *headers])
    return st.builds(bytes.__add__, prefix, st.binary(max_size=300))


@given(data=_random_request_inputs(), cuts=st.lists(st.integers(0, 2000), max_size=4))
@settings(max_examples=150, deadline=None)
def test_random_bytes_to_the_request_decoder_raise_only_protocol_errors(data, cuts):
    with pytest.raises(ProtocolError):
        feed_split(ChunkedRequestDecoder(STORE), data, cuts)


@given(
    data=st.builds(bytes.__add__, st.binary(min_size=32, max_size=32), st.binary(max_size=300)),
    cuts=st.lists(st.integers(0, 400), max_size=4),
)
@settings(max_examples=150, deadline=None)
def test_random_bytes_to_the_response_decoder_raise_only_protocol_errors(data, cuts):
    suite = Suite.from_ids(0x647A, 1, 2)
    decoder = ChunkedResponseDecoder(suite, b"e" * 1120, b"s" * 32)
    with pytest.raises(ProtocolError):
        feed_split(decoder, data, cuts)


def test_response_encoder_output_matches_a_fresh_decoder_chunk_by_chunk():
    suite = Suite.from_ids(0x0020, 1, 3)
    encoder = ChunkedResponseEncoder(suite, b"e" * 32, b"s" * 32)
    decoder = ChunkedResponseDecoder(suite, b"e" * 32, b"s" * 32)
    assert decoder.feed(encoder.header) == []
    for index in range(300):  # past one-byte counters
        token = f"data: {index}\n\n".encode()
        assert decoder.feed(encoder.seal_chunk(token)) == [token]
    assert decoder.feed(encoder.seal_chunk(b"", final=True)) == []
    assert decoder.finish() == b""
