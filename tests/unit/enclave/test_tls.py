"""RA-TLS serving: a real TLS 1.3 handshake on loopback presents a certificate whose evidence
verifies (simulated TEE, real dcap-qvl); a reissue with a model claim reaches new handshakes
while a connection opened before keeps working."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest

from attestation.collateral import Collateral
from attestation.evidence import ModelClaim
from attestation.ratls import CLOCK_SKEW, RaTlsIssuer, parse_certificate
from attestation.verify import verify_evidence
from enclave.tls import CertificateManager, model_claim
from enclave_dev.tee import Simulator
from model_manager.digests import ModelDigest
from model_manager.status import ModelStatus

MODEL = ModelClaim("tiny", "dm-verity", bytes(range(32)))


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator.create()


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust comes from the evidence, checked below
    return context


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(100):
        writer.write(data)
        await writer.drain()
    writer.close()


async def peer_certificate(port: int) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object.version() == "TLSv1.3"
    return ssl_object.getpeercert(binary_form=True), reader, writer


async def test_handshake_evidence_verifies_and_reissue_keeps_open_connections(sim: Simulator):
    async def quote(report_data: bytes) -> bytes:
        return sim.quote(report_data)

    model: list[ModelClaim | None] = [None]
    reasons: list[str] = []
    manager = CertificateManager(
        RaTlsIssuer(quote),
        ohttp_keys=lambda: b"key configs",
        model=lambda: model[0],
        service_version="0.1.0",
        on_reissue=reasons.append,
    )
    await manager.reissue("start")
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=manager.ssl_context)
    port = server.sockets[0].getsockname()[1]
    collateral = Collateral.from_json(sim.collateral_json())
    try:
        der, reader, writer = await peer_certificate(port)
        parsed = parse_certificate(der)
        verified = verify_evidence(
            parsed.evidence,
            collateral=collateral,
            peer_spki_der=parsed.spki_der,
            now=sim.now,
            insecure_root_ca_der=sim.root_ca_der,
        )
        assert verified.status == "UpToDate"
        assert verified.model is None

        model[0] = MODEL
        await manager.reissue("model")
        der2, _reader2, writer2 = await peer_certificate(port)
        assert der2 != der
        parsed2 = parse_certificate(der2)
        assert parsed2.spki_der == parsed.spki_der  # same key, new evidence
        verified2 = verify_evidence(
            parsed2.evidence,
            collateral=collateral,
            peer_spki_der=parsed2.spki_der,
            now=sim.now,
            insecure_root_ca_der=sim.root_ca_der,
        )
        assert verified2.model == MODEL

        writer.write(b"still here")  # the connection from before the reissue
        await writer.drain()
        assert await reader.readexactly(10) == b"still here"
        for w in (writer, writer2):
            w.close()
        assert reasons == ["start", "model"]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("lifetime_seconds", [24 * 3600, 60])
def test_refresh_is_due_at_eighty_percent_of_the_lifetime(sim: Simulator, lifetime_seconds: int):
    async def run() -> float:
        async def quote(report_data: bytes) -> bytes:
            return sim.quote(report_data)

        manager = CertificateManager(
            RaTlsIssuer(quote, lifetime=datetime.timedelta(seconds=lifetime_seconds)),
            ohttp_keys=lambda: b"k",
            model=lambda: None,
            service_version="v",
        )
        issued = await manager.reissue("start")
        return manager.seconds_until_refresh(issued.not_before + CLOCK_SKEW)

    # not_before is five minutes early (clock skew): the lifetime counts from issuance, so a
    # short-lived certificate is not due (and reissued over and over) before it was issued.
    assert asyncio.run(run()) == pytest.approx(0.8 * lifetime_seconds, abs=1)


def test_model_claim_only_when_ready():
    digest = ModelDigest("dm-verity", bytes(32))
    ready = ModelStatus("ready", "tiny", digest, "", 1.0, 0.0, 1)
    assert model_claim(ready) == ModelClaim("tiny", "dm-verity", bytes(32))
    loading = ModelStatus("loading", "tiny", digest, "", 0.5, 0.0, 1)
    assert model_claim(loading) is None
