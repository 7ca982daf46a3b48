"""The CoCo attestation-agent provider against a fake api-server-rest on 127.0.0.1.

The fake behaves as guest-components' api-server-rest + TDX attester do: it decodes
``runtime_data`` (URL-safe base64, no padding, when ``encoding=base64``; the raw UTF-8 string
otherwise), refuses more than 64 bytes with a 500, zero-pads to 64 and answers the evidence
JSON with a simulated TDX quote over those bytes and a CCEL log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from attestation.errors import QuoteProviderError, QuoteProviderUnavailableError
from attestation.providers import (
    DEFAULT_COCO_AA_URL,
    CocoAttestationAgentProvider,
    QuoteProvider,
    detect_provider,
)
from enclave_dev.tee import Simulator
from tests.vectors import load_bytes

REPORT_DATA = bytes(range(0x80, 0xC0))  # not valid UTF-8: must travel as base64
AA_TOO_LONG = b"TDX Attester: Report data must be no more than 64 bytes"

EV_NO_ACTION = 3
SHA384_ALG = 0x000C


def _ccel() -> bytes:
    """A minimal TCG2 crypto-agile log: the Spec ID header, then one RTMR0 event."""
    spec = b"Spec ID Event03\x00" + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
    spec += struct.pack("<I", 1) + struct.pack("<HH", SHA384_ALG, 48) + b"\x00"
    header = struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    event = struct.pack("<III", 1, 0x80000008, 1) + struct.pack("<H", SHA384_ALG) + b"\x11" * 48
    return header + event + struct.pack("<I", 8) + b"firmware"


CCEL = _ccel()


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]


Handler = Callable[[Request], tuple[int, bytes] | None]  # None: never answer


@pytest.fixture(scope="module")
def simulator() -> Simulator:
    return Simulator.create()


def _runtime_data(request: Request) -> bytes:
    params = dict(request.query)
    value = params["runtime_data"]
    if params.get("encoding") == "base64":
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    return value.encode("utf-8")


@dataclass
class FakeAgent:
    simulator: Simulator
    handler: Handler | None = None
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    evidence_extra: dict[str, object] = field(default_factory=dict)
    cc_eventlog: str | None = base64.b64encode(CCEL).decode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def aa(self, request: Request) -> tuple[int, bytes]:
        """api-server-rest + the AA's TDX attester (after guest-components PR #1487)."""
        if request.path != "/aa/evidence":
            return 404, b""
        data = _runtime_data(request)
        if len(data) > 64:
            return 500, AA_TOO_LONG
        quote = self.simulator.quote(data.ljust(64, b"\x00"))
        evidence: dict[str, object] = {
            "cc_eventlog": self.cc_eventlog,
            "quote": base64.b64encode(quote).decode(),
            **self.evidence_extra,
        }
        return 200, json.dumps(evidence).encode()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            parts = urlsplit(target)
            request = Request(method, parts.path, parse_qsl(parts.query), headers)
            self.requests.append(request)
            answer = (self.handler or self.aa)(request)
            if answer is None:
                await reader.read()  # say nothing until the client gives up and hangs up
                return
            status, payload = answer
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def agent(simulator: Simulator) -> AsyncIterator[FakeAgent]:
    fake = FakeAgent(simulator)
    server = await asyncio.start_server(fake.serve, host="127.0.0.1", port=0)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        yield fake
    finally:
        server.close()
        await server.wait_closed()


def _provider(agent: FakeAgent, timeout: float = 5) -> CocoAttestationAgentProvider:
    return CocoAttestationAgentProvider(agent.url, timeout=timeout)


# --- the exchange ----------------------------------------------------------------------------


async def test_get_quote_round_trip(agent: FakeAgent) -> None:
    provider: QuoteProvider = _provider(agent)
    result = await provider.get_quote(REPORT_DATA)
    assert result.provider == "coco"
    assert result.event_log is not None
    assert result.event_log.format == "ccel"
    assert result.event_log.raw == CCEL
    assert [(e.imr, e.payload) for e in result.event_log.events] == [(0, b"firmware")]
    (request,) = agent.requests
    assert (request.method, request.path) == ("GET", "/aa/evidence")
    runtime_data = base64.urlsafe_b64encode(REPORT_DATA).rstrip(b"=").decode()
    assert request.query == [("runtime_data", runtime_data), ("encoding", "base64")]
    assert "=" not in runtime_data


async def test_the_quote_carries_all_64_bytes_verbatim(agent: FakeAgent) -> None:
    from attestation.quote import parse_quote

    data = bytes(32) + b"\xff" * 31 + b"\x00"  # leading zeros, a trailing zero, non-UTF-8
    result = await _provider(agent).get_quote(data)
    assert parse_quote(result.quote).report_data == data


@pytest.mark.parametrize("log", [None, ""])
async def test_evidence_without_an_event_log(agent: FakeAgent, log: str | None) -> None:
    agent.cc_eventlog = log
    result = await _provider(agent).get_quote(REPORT_DATA)
    assert result.event_log is None


async def test_unknown_evidence_fields_are_ignored(agent: FakeAgent) -> None:
    agent.evidence_extra = {"aa_eventlog": "INIT sha384/abc", "future": [1, 2]}
    result = await _provider(agent).get_quote(REPORT_DATA)
    assert result.event_log is not None


async def test_report_data_must_be_64_bytes(agent: FakeAgent) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        await _provider(agent).get_quote(bytes(32))
    assert agent.requests == []


# --- an api-server-rest older than encoding=base64 fails closed --------------------------------


async def test_server_that_ignores_encoding_is_refused_by_the_aa(agent: FakeAgent) -> None:
    def ignores_encoding(request: Request) -> tuple[int, bytes]:
        request.query = [(k, v) for k, v in request.query if k != "encoding"]
        return agent.aa(request)

    agent.handler = ignores_encoding
    with pytest.raises(QuoteProviderError, match="HTTP 500: 'TDX Attester: Report data must"):
        await _provider(agent).get_quote(REPORT_DATA)


async def test_quote_over_other_report_data_is_refused(agent: FakeAgent) -> None:
    def wrong_quote(request: Request) -> tuple[int, bytes]:
        quote = agent.simulator.quote(b"x" * 64)
        return 200, json.dumps({"quote": base64.b64encode(quote).decode()}).encode()

    agent.handler = wrong_quote
    with pytest.raises(QuoteProviderError, match="different report_data"):
        await _provider(agent).get_quote(REPORT_DATA)


async def test_quote_over_a_truncated_report_data_is_refused(agent: FakeAgent) -> None:
    # A server that dropped the second half: the AA would zero-pad what it got.
    def half(request: Request) -> tuple[int, bytes]:
        quote = agent.simulator.quote(_runtime_data(request)[:32].ljust(64, b"\x00"))
        return 200, json.dumps({"quote": base64.b64encode(quote).decode()}).encode()

    agent.handler = half
    with pytest.raises(QuoteProviderError, match="different report_data"):
        await _provider(agent).get_quote(REPORT_DATA)


# --- error replies ---------------------------------------------------------------------------


def _evidence(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (403, b"", "HTTP 403 .*loopback"),
        (404, b"", "HTTP 404 .*guest_components_rest_api"),
        (405, b"", "HTTP 405 .*encoding=base64"),
        (400, b"", "HTTP 400$"),
        (500, b"ttrpc: deadline exceeded\n\x1b[31m", "HTTP 500: 'ttrpc: deadline exceeded"),
        (302, b"", "HTTP 302"),
        (200, b"not json", "not JSON"),
        (200, b"[" * 50_000 + b"]" * 50_000, "not JSON"),
        (200, b"[]", "not a JSON object"),
        (200, _evidence(svn="1", report_data="eHh4eA=="), "sample-attester"),
        (200, _evidence(tpm_quote={}, hcl_report="AA=="), "no 'quote'"),
        (200, _evidence(quote=""), "no 'quote'"),
        (200, _evidence(quote=5), "no 'quote'"),
        (200, _evidence(quote="!!!not base64"), "'quote' is not base64"),
        (200, _evidence(quote="bm90IGEgcXVvdGU="), "'quote' is not a quote"),
    ],
)
async def test_error_replies(agent: FakeAgent, status: int, body: bytes, match: str) -> None:
    agent.handler = lambda r: (status, body)
    with pytest.raises(QuoteProviderError, match=match):
        await _provider(agent).get_quote(REPORT_DATA)


async def test_sgx_quote_is_refused(agent: FakeAgent) -> None:
    sgx = base64.b64encode(load_bytes("tdx/sgx_quote")).decode()
    agent.handler = lambda r: (200, _evidence(quote=sgx))
    with pytest.raises(QuoteProviderError, match="not a TDX quote"):
        await _provider(agent).get_quote(REPORT_DATA)


@pytest.mark.parametrize(
    ("log", "match"),
    [
        (5, "'cc_eventlog' is not a string"),
        ("@@@", "'cc_eventlog' is not base64"),
        ("é", "'cc_eventlog' is not base64"),
        (base64.b64encode(b"\x00" * 10).decode(), "CCEL is malformed"),
        (base64.b64encode(CCEL[:-3]).decode(), "CCEL is malformed"),
    ],
)
async def test_malformed_event_log(agent: FakeAgent, log: object, match: str) -> None:
    agent.evidence_extra = {"cc_eventlog": log}
    with pytest.raises(QuoteProviderError, match=match):
        await _provider(agent).get_quote(REPORT_DATA)


async def test_agent_that_never_answers_times_out(agent: FakeAgent) -> None:
    agent.handler = lambda r: None
    with pytest.raises(QuoteProviderError, match="timed out"):
        await _provider(agent, timeout=0.2).get_quote(REPORT_DATA)


async def test_oversized_reply_is_refused(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("attestation.providers._coco.MAX_COCO_RESPONSE_BYTES", 1000)
    agent.handler = lambda r: (200, _evidence(quote="A" * 2000))
    with pytest.raises(QuoteProviderError, match="exceeds"):
        await _provider(agent).get_quote(REPORT_DATA)


async def test_oversized_chunked_reply_is_refused(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("attestation.providers._coco.MAX_COCO_RESPONSE_BYTES", 1000)

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            writer.write(b"200\r\n" + b"A" * 0x200 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(chunked, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(QuoteProviderError, match="exceeds"):
            await CocoAttestationAgentProvider(f"http://127.0.0.1:{port}").get_quote(REPORT_DATA)
    finally:
        server.close()
        await server.wait_closed()


async def test_nobody_listening_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: connecting is refused.
    with pytest.raises(QuoteProviderUnavailableError, match="guest_components_rest_api"):
        await CocoAttestationAgentProvider(f"http://127.0.0.1:{port}").get_quote(REPORT_DATA)


async def test_proxy_environment_is_ignored(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    result = await _provider(agent).get_quote(REPORT_DATA)
    assert result.quote
    assert len(agent.requests) == 1


# --- the base URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8006",
        "http://127.0.0.1:8006/",
        "http://127.1.2.3:8006",
        "http://[::1]:8006",
        "https://127.0.0.1:8443",
    ],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    provider = CocoAttestationAgentProvider(url)
    assert repr(provider).endswith("/')")


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://10.0.0.5:8006", "loopback"),
        ("http://localhost:8006", "loopback"),
        ("http://aa.example:8006", "loopback"),
        ("http://0.0.0.0:8006", "loopback"),
        ("ftp://127.0.0.1:8006", "origin"),
        ("unix:///run/aa.sock", "origin"),
        ("127.0.0.1:8006", "origin"),
        ("http://user:pw@127.0.0.1:8006", "bare origin"),
        ("http://127.0.0.1:8006/aa", "bare origin"),
        ("http://127.0.0.1:8006/?x=1", "bare origin"),
        ("http://127.0.0.1:8006/#f", "bare origin"),
        ("http://[::1", "not a URL"),
    ],
)
def test_other_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CocoAttestationAgentProvider(url)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        CocoAttestationAgentProvider(timeout=0)


async def test_insecure_remote_agent_warns_every_time(
    agent: FakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        provider = CocoAttestationAgentProvider(
            f"http://localhost:{agent.port}", insecure_allow_remote_agent=True
        )
        await provider.get_quote(REPORT_DATA)
        await provider.get_quote(REPORT_DATA)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(r.getMessage().startswith("INSECURE:") for r in warnings)


def test_loopback_agent_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        CocoAttestationAgentProvider()
    assert caplog.records == []


# --- detection -------------------------------------------------------------------------------


def test_explicit_coco_is_made_without_contacting_the_agent() -> None:
    provider = detect_provider("coco")
    assert isinstance(provider, CocoAttestationAgentProvider)
    assert provider.name == "coco"
    assert DEFAULT_COCO_AA_URL == "http://127.0.0.1:8006"
    assert repr(provider) == "CocoAttestationAgentProvider(base_url='http://127.0.0.1:8006/')"


async def test_detect_coco_with_a_url_and_timeout(agent: FakeAgent) -> None:
    provider = detect_provider("coco", coco_url=agent.url, timeout=5)
    result = await provider.get_quote(REPORT_DATA)
    assert result.provider == "coco"


def test_detect_coco_refuses_a_remote_url() -> None:
    with pytest.raises(ValueError, match="loopback"):
        detect_provider("coco", coco_url="http://192.0.2.1:8006")


async def test_auto_never_picks_coco_even_when_an_agent_listens(
    agent: FakeAgent, tmp_path: Path
) -> None:
    with pytest.raises(QuoteProviderUnavailableError):
        detect_provider(
            tsm_root=tmp_path / "absent",
            dstack_socket=tmp_path / "absent.sock",
            coco_url=agent.url,
        )
    assert agent.requests == []
