"""A fixed cadence (issue 19 #3, ``stream_cadence_ms``), through the real service: pieces leave
every 50 ms whatever the engine does (here it is slower, 10 tokens a second), each a whole
number of buckets, keep-alive pieces filling the ticks with no token; the answer parsed is the
same. On both paths: TLS records as a TCP forwarder sees them, OHTTP chunks as a relay does."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from enclave.protocol.padding import strip_event_padding
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server.conftest import TOKEN, Running, load_model, sse_text
from tests.integration.server.observers import TlsRecord, TlsRecordForwarder, raw_tls_exchange
from tests.integration.server.test_size_padding import _dechunk, _http_request, _ohttp_sizes

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

CADENCE = 0.05
PROMPT = "one two three four five six"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cadenced(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("cadence")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=("--dev-load-seconds", "0.2", "--dev-tokens-per-second", "10"),
        stream_cadence_ms=int(CADENCE * 1000),
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        running = Running(server, simulator, server.bound_port, tmp)
        await load_model(running, "tiny")
        yield running


def _check_cadence(pieces: list[TlsRecord], framing: int, events: int) -> None:
    assert {piece.length % 256 for piece in pieces} == {framing}, [p.length for p in pieces]
    assert len(pieces) > events  # keep-alive pieces filled the ticks with no token
    gaps = [b.at - a.at for a, b in itertools.pairwise(pieces)]
    assert CADENCE * 0.6 < statistics.median(gaps) < CADENCE * 1.8, gaps


async def test_tls_records_leave_at_the_cadence(cadenced: Running) -> None:
    async with TlsRecordForwarder(cadenced.port) as forwarder:
        response, records = await raw_tls_exchange(forwarder, _http_request(PROMPT))
    body = _dechunk(response)
    assert sse_text(body).endswith(" " + PROMPT)
    _check_cadence(records[1:-2], 7 + 17, body.count(b"data: "))


async def test_ohttp_chunks_leave_at_the_cadence(cadenced: Running) -> None:
    chunks, content = await _ohttp_sizes(cadenced, PROMPT)
    content = strip_event_padding(content)
    assert sse_text(content).endswith(" " + PROMPT)
    _check_cadence(chunks[1:-1], 2 + 16, content.count(b"data: "))
