"""The dstack provider against a fake guest agent: HTTP/1.1 on a Unix socket in a temp dir."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from attestation.errors import QuoteProviderError, QuoteProviderUnavailableError
from attestation.eventlog import DSTACK_RUNTIME_EVENT_TYPE, runtime_event_digest
from attestation.providers import DstackProvider

REPORT_DATA = bytes(range(64))
QUOTE = b"\x04\x00\x02\x00\x81\x00\x00\x00" + b"\xaa" * 100
EVENT_LOG = [
    {
        "imr": 0,
        "event_type": 1,
        "digest": "11" * 48,
        "event": "",
        "event_payload": "0102",
    },
    {
        "imr": 3,
        "event_type": DSTACK_RUNTIME_EVENT_TYPE,
        "digest": runtime_event_digest("compose-hash", b"\x22" * 32).hex(),
        "event": "compose-hash",
        "event_payload": "22" * 32,
    },
]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request], tuple[int, bytes] | None]  # None: never answer


def good_reply(request: Request) -> tuple[int, bytes]:
    report_data = json.loads(request.body)["report_data"]
    reply = {
        "quote": QUOTE.hex(),
        "event_log": json.dumps(EVENT_LOG),
        "report_data": report_data,
        "vm_config": "{}",
    }
    return 200, json.dumps(reply).encode()


@dataclass
class FakeAgent:
    socket_path: Path
    handler: Handler = good_reply
    requests: list[Request] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, body)
            self.requests.append(request)
            answer = self.handler(request)
            if answer is None:
                await reader.read()  # say nothing until the client gives up and hangs up
                return
            status, payload = answer
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def agent() -> AsyncIterator[FakeAgent]:
    # Unix socket paths are limited to ~108 bytes, so use a short temp dir, not tmp_path.
    directory = Path(tempfile.mkdtemp(prefix="dstack-", dir="/tmp"))
    fake = FakeAgent(directory / "dstack.sock")
    server = await asyncio.start_unix_server(fake.serve, path=str(fake.socket_path))
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory)


async def test_get_quote_round_trip(agent: FakeAgent) -> None:
    result = await DstackProvider(agent.socket_path, timeout=5).get_quote(REPORT_DATA)
    assert result.provider == "dstack"
    assert result.quote == QUOTE
    assert result.event_log is not None
    assert [e.imr for e in result.event_log.events] == [0, 3]
    assert result.event_log.named("compose-hash")[0].payload == b"\x22" * 32
    (request,) = agent.requests
    assert (request.method, request.path) == ("POST", "/GetQuote")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"report_data": REPORT_DATA.hex()}


async def test_reply_without_event_log(agent: FakeAgent) -> None:
    agent.handler = lambda r: (200, json.dumps({"quote": QUOTE.hex(), "event_log": ""}).encode())
    result = await DstackProvider(agent.socket_path, timeout=5).get_quote(REPORT_DATA)
    assert result.quote == QUOTE
    assert result.event_log is None


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (400, b'{"error": "TDX is not available"}', "HTTP 400: 'TDX is not available'"),
        (500, b"<html>boom</html>", "HTTP 500$"),
        (404, b'{"error": "Service not found: GetQuote"}', "HTTP 404"),
        (200, b"not json", "not JSON"),
        (200, b"[]", "not a JSON object"),
        (200, b'{"event_log": "[]"}', "no hex 'quote'"),
        (200, b'{"quote": "xyz"}', "no hex 'quote'"),
        (200, b'{"quote": ""}', "no hex 'quote'"),
        (200, b'{"quote": "00", "event_log": 5}', "not a string"),
        (200, b'{"quote": "00", "event_log": "[{]"}', "malformed"),
        (200, b'{"quote": "00", "event_log": "[{\\"imr\\": 9}]"}', "malformed"),
        (200, b'{"quote": "00", "report_data": "ff"}', "different report_data"),
        (200, b"[" * 50_000 + b"]" * 50_000, "not JSON"),
    ],
)
async def test_error_replies(agent: FakeAgent, status: int, body: bytes, match: str) -> None:
    agent.handler = lambda r: (status, body)
    with pytest.raises(QuoteProviderError, match=match):
        await DstackProvider(agent.socket_path, timeout=5).get_quote(REPORT_DATA)


async def test_agent_that_never_answers_times_out(agent: FakeAgent) -> None:
    agent.handler = lambda r: None
    with pytest.raises(QuoteProviderError, match="timed out"):
        await DstackProvider(agent.socket_path, timeout=0.2).get_quote(REPORT_DATA)


async def test_missing_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(QuoteProviderUnavailableError):
        await DstackProvider(tmp_path / "dstack.sock").get_quote(REPORT_DATA)


async def test_dead_socket_is_an_error(tmp_path: Path) -> None:
    dead = tmp_path / "dstack.sock"
    dead.write_bytes(b"")  # exists, but nobody listens
    with pytest.raises(QuoteProviderError, match="failed"):
        await DstackProvider(dead, timeout=2).get_quote(REPORT_DATA)


async def test_report_data_must_be_64_bytes(agent: FakeAgent) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        await DstackProvider(agent.socket_path).get_quote(bytes(32))
    assert agent.requests == []


async def test_oversized_reply_is_refused(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("attestation.providers._dstack.MAX_DSTACK_RESPONSE_BYTES", 1000)
    agent.handler = lambda r: (200, json.dumps({"quote": "00" * 1000}).encode())
    with pytest.raises(QuoteProviderError, match="exceeds"):
        await DstackProvider(agent.socket_path, timeout=5).get_quote(REPORT_DATA)
