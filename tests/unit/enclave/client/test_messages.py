"""The OHTTP client's response reader: a missing final chunk is truncation, a flipped bit is
a decryption error, a complete stream yields the inner response."""

from __future__ import annotations

import pytest

from enclave.client._messages import ChunkedResponseReader, is_ohttp_key_problem
from enclave.client.errors import ResponseDecryptError, ResponseTruncated
from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestDecoder, ChunkedRequestEncoder
from enclave.protocol.ohttp import KeyStore, generate_default_key_configs


def exchange() -> tuple[ChunkedResponseReader, bytes, bytes]:
    """A reader and the sealed response pieces: (head and body, final chunk)."""
    store = KeyStore(generate_default_key_configs())
    encoder = ChunkedRequestEncoder(store.lookup(1).config)
    gateway = ChunkedRequestDecoder(store)
    gateway.feed(encoder.header + encoder.seal_chunk(b"request", final=True))
    gateway.finish()
    sealer = gateway.response_encoder()
    stream = bhttp.StreamingResponseEncoder()
    body = (
        sealer.header
        + sealer.seal_chunk(stream.head(200, ((b"content-type", b"text/event-stream"),)))
        + sealer.seal_chunk(stream.body(b"data: 1\n\n"))
    )
    final = sealer.seal_chunk(stream.end(), final=True)
    return ChunkedResponseReader(encoder.response_decoder()), body, final


def test_complete_stream_yields_head_body_and_end() -> None:
    reader, body, final = exchange()
    events = reader.feed(body) + reader.feed(final) + reader.finish()
    assert isinstance(events[0], bhttp.ResponseHead)
    assert events[0].status == 200
    assert bhttp.BodyChunk(b"data: 1\n\n") in events
    assert isinstance(events[-1], bhttp.MessageEnd)


def test_missing_final_chunk_is_truncation() -> None:
    reader, body, _final = exchange()
    events = reader.feed(body)
    assert bhttp.BodyChunk(b"data: 1\n\n") in events  # delivered incrementally
    with pytest.raises(ResponseTruncated):
        reader.finish()


def test_flipped_bit_is_a_decryption_error() -> None:
    reader, body, final = exchange()
    damaged = bytearray(body + final)
    damaged[-3] ^= 1
    reader.feed(bytes(damaged))
    with pytest.raises(ResponseDecryptError):
        reader.finish()


def test_ohttp_key_problem_is_recognised() -> None:
    problem = b'{"type": "https://iana.org/assignments/http-problem-types#ohttp-key"}'
    assert is_ohttp_key_problem(422, problem)
    assert not is_ohttp_key_problem(422, b"{}")
    assert not is_ohttp_key_problem(500, problem)
