"""The RA-TLS transport refuses a connection whose evidence fails before writing a byte, and
caches a verified certificate by its quote digest."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from attestation.collateral import Collateral
from attestation.policy import Policy, pinned_policy
from attestation.ratls import RaTlsIssuer
from enclave.cli._models import render_progress
from enclave.client import AsyncRaTlsTransport, AttestationFailed, Verifier
from enclave.tls import CertificateManager
from enclave_dev.tee import Simulator


class Source:
    def __init__(self, simulator: Simulator) -> None:
        self.collateral = Collateral.from_json(simulator.collateral_json())

    async def get_collateral(self, quote: bytes) -> Collateral:
        return self.collateral


def pinned(sim: Simulator) -> Policy:
    return pinned_policy(sim.measurements.registers())


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator.create()


async def tls_server(sim: Simulator, received: list[bytes]) -> tuple[asyncio.Server, int]:
    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    manager = CertificateManager(
        RaTlsIssuer(quote), ohttp_keys=lambda: b"k", model=lambda: None, service_version="v"
    )
    await manager.reissue("start")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            received.append(data)
            if b"\r\n\r\n" in b"".join(received):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=manager.ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def test_failing_evidence_is_refused_before_any_request_byte(sim: Simulator) -> None:
    received: list[bytes] = []
    server, port = await tls_server(sim, received)
    wrong = dataclasses.replace(pinned(sim), mrtd=frozenset({b"\x11" * 48}))
    verifier = Verifier(Source(sim), policy=wrong, insecure_root_ca_der=sim.root_ca_der)
    try:
        async with httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier)) as client:
            with pytest.raises(AttestationFailed) as caught:
                await client.get(f"https://127.0.0.1:{port}/secret-path")
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.reason == "mrtd_not_allowed"
    assert received == []


async def test_verified_certificate_is_cached_by_quote_digest(sim: Simulator) -> None:
    received: list[bytes] = []
    server, port = await tls_server(sim, received)
    verifier = Verifier(Source(sim), policy=pinned(sim), insecure_root_ca_der=sim.root_ca_der)
    try:
        for _ in range(2):  # a fresh client, so a fresh connection, each time
            transport = AsyncRaTlsTransport(verifier)
            async with httpx.AsyncClient(transport=transport) as client:
                response = await client.get(f"https://127.0.0.1:{port}/")
                assert response.text == "ok"
    finally:
        server.close()
        await server.wait_closed()
    assert verifier.verifications == 1


async def test_plain_http_is_refused() -> None:
    verifier = Verifier(Source(Simulator.create()), policy=Policy(insecure_any_measurement=True))
    async with httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier)) as client:
        with pytest.raises(AttestationFailed) as caught:
            await client.get("http://127.0.0.1:9/")
    assert caught.value.reason == "not_tls"


def test_progress_bar() -> None:
    line = render_progress({"proxy_progress": 0.5, "proxy_status": "loading", "proxy_message": "m"})
    assert line.startswith("[" + "#" * 15 + "-" * 15 + "]")
    assert "50.0% loading: m" in line
