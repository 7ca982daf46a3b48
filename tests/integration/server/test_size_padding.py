"""Sizes that say nothing (issue 19), through the real service and the development engine.

Two answers of the same number of tokens, one of one-letter words and one of twelve-letter
words (the development engine echoes the prompt's words), streamed:

- over RA-TLS, as a TCP forwarder sees them (the TLS application-data record lengths), and
- over chunked OHTTP, as a relay sees them (the sealed chunk lengths),

give identical size sequences with the default padding. The same run against a service with
``insecure_no_stream_padding`` shows the observer is not blind: there the sequences differ by
exactly the tokens' lengths (the leak the padding closes).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from enclave.protocol import bhttp
from enclave.protocol._encap import response_nonce_size
from enclave.protocol.padding import strip_event_padding
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server.conftest import (
    TOKEN,
    Running,
    chat_request,
    encapsulate,
    key_configs,
    load_model,
    sse_text,
)
from tests.integration.server.observers import (
    TlsRecord,
    TlsRecordForwarder,
    bursts,
    ohttp_chunks,
    raw_tls_exchange,
)

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

WORDS = 24
SHORT = " ".join(["a"] * WORDS)
LONG = " ".join(["abcdefghijkl"] * WORDS)
#: Paced so that every token is its own event, read and relayed alone.
ENGINE_FLAGS = ("--dev-load-seconds", "0.2", "--dev-tokens-per-second", "20")


async def _serve(
    tmp_path_factory: pytest.TempPathFactory, **overrides: object
) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("padding")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    settings = local_settings(tmp, load_token=TOKEN, engine_flags=ENGINE_FLAGS, **overrides)
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        running = Running(server, simulator, server.bound_port, tmp)
        await load_model(running, "tiny")
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def padded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async for running in _serve(tmp_path_factory):
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def unpadded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    async for running in _serve(tmp_path_factory, insecure_no_stream_padding=True):
        yield running


def _http_request(prompt: str) -> bytes:
    body = json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "max_tokens": 64,
        }
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: enclave\r\n"
        "content-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _tls_sizes(running: Running, prompt: str) -> tuple[list[TlsRecord], bytes]:
    async with TlsRecordForwarder(running.port) as forwarder:
        response, records = await raw_tls_exchange(forwarder, _http_request(prompt))
    assert response.startswith(b"HTTP/1.1 200"), response[:200]
    return records, response


async def _ohttp_sizes(running: Running, prompt: str) -> tuple[list[TlsRecord], bytes]:
    """The chunks as the relay sees them (the outer body, as it arrives), and the content."""
    config = (await key_configs(running))[0]
    body, decoder = encapsulate(config, chat_request(prompt, max_tokens=64))
    pieces: list[tuple[float, bytes]] = []
    async with (
        running.client() as client,
        client.stream(
            "POST",
            "/.well-known/ohttp-gateway",
            content=body,
            headers={"content-type": "message/ohttp-chunked-req", "incremental": "?1"},
        ) as response,
    ):
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            pieces.append((time.monotonic(), piece))
    outer = b"".join(piece for _, piece in pieces)
    plaintext = b"".join(decoder.feed(outer)) + decoder.finish()  # complete: the final chunk
    content = bhttp.decode_response(plaintext).content
    return ohttp_chunks(pieces, response_nonce_size(config.suites()[0])), content


def _expected_words(word: str) -> str:
    return " " + " ".join([word] * WORDS)


def _lengths(records: list[TlsRecord]) -> list[int]:
    return [record.length for record in records]


#: Records closer than this are one burst (the engine paces tokens 50 ms apart; it writes the
#: last events together, and how the kernel and the event loop cut those into records varies).
GAP = 0.015


async def test_tls_records_of_two_answers_have_identical_sizes(padded: Running) -> None:
    short, short_body = await _tls_sizes(padded, SHORT)
    long, long_body = await _tls_sizes(padded, LONG)
    assert _expected_words("a") in sse_text(_dechunk(short_body))
    assert _expected_words("abcdefghijkl") in sse_text(_dechunk(long_body))
    assert len(short) >= WORDS  # one record per token at least: the stream was observed
    # The head; records of events, each a whole number of buckets plus the fixed framing (7
    # bytes of HTTP/1.1 chunk, 17 of TLS); the chunked terminator (5 + 17); close_notify.
    for records in (short, long):
        lengths = _lengths(records)
        assert {length % 256 for length in lengths[1:-2]} == {7 + 17}, lengths
        assert lengths[-2:] == [5 + 17, 2 + 17]
    # The same number of buckets in all, and event by event the same padded sizes. How events
    # that arrived together share a record is scheduling (timing, not content: a record of k
    # events is k buckets either way), so record boundaries are not compared.
    assert sum(bursts(short[1:-2], GAP, 24, 256)) == sum(bursts(long[1:-2], GAP, 24, 256))
    assert _event_sizes(_dechunk(short_body, strip=False)) == _event_sizes(
        _dechunk(long_body, strip=False)
    )
    assert _lengths(short[0:1]) == _lengths(long[0:1])


async def test_ohttp_chunks_of_two_answers_have_identical_sizes(padded: Running) -> None:
    short, short_content = await _ohttp_sizes(padded, SHORT)
    long, long_content = await _ohttp_sizes(padded, LONG)
    assert _expected_words("a") in sse_text(strip_event_padding(short_content))
    assert _expected_words("abcdefghijkl") in sse_text(strip_event_padding(long_content))
    assert len(short) >= WORDS
    # The head; chunks of whole buckets (2 bytes of Binary HTTP chunk length, 16 of AEAD tag);
    # the final chunk (the content's end, 1 byte, and its tag).
    for chunks in (short, long):
        lengths = _lengths(chunks)
        assert {length % 256 for length in lengths[1:-1]} == {2 + 16}, lengths
        assert lengths[-1] == 2 + 16
    assert sum(bursts(short[1:-1], GAP, 18, 256)) == sum(bursts(long[1:-1], GAP, 18, 256))
    assert _event_sizes(short_content) == _event_sizes(long_content)
    assert _lengths(short[0:1]) == _lengths(long[0:1])


def _token_records(short: list[TlsRecord], long: list[TlsRecord]) -> int:
    """How many records of the long answer are its short twin's plus the 11 more letters (12
    where the HTTP/1.1 chunk size took one more hex digit)."""
    return sum(b.length - a.length in (11, 12) for a, b in zip(short, long, strict=False))


async def test_without_padding_the_observer_reads_the_token_lengths(unpadded: Running) -> None:
    short, _ = await _tls_sizes(unpadded, SHORT)
    long, _ = await _tls_sizes(unpadded, LONG)
    assert _token_records(short, long) >= WORDS // 2
    short, _ = await _ohttp_sizes(unpadded, SHORT)
    long, _ = await _ohttp_sizes(unpadded, LONG)
    assert _token_records(short, long) >= WORDS // 2


def _event_sizes(stream: bytes) -> list[int]:
    """The length of each SSE event of ``stream`` as sent (its padding comment included)."""
    events = stream.split(b"\n\n")
    assert events[-1] == b"", events[-1][:100]
    return [len(event) + 2 for event in events[:-1]]


def _dechunk(response: bytes, *, strip: bool = True) -> bytes:
    """The body of an HTTP/1.1 chunked response, padding comment lines removed unless not
    ``strip``."""
    _, _, rest = response.partition(b"\r\n\r\n")
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return strip_event_padding(bytes(body)) if strip else bytes(body)
