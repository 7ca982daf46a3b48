"""Every binding check of the client, proven by the attack it stops: an attacker TD on the
genuine platform, or a man in the middle, presents the mismatching thing, and the client
answers with the check's reason code and sends nothing. The attacks are in ``attacks.py``;
``test_check_mutations.py`` disables each check and shows its attack then succeeds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from attestation.checks import Reason
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    AttestationFailed,
    OhttpTransport,
    RaTlsTransport,
    attested_endpoint,
    averify_endpoint,
    verify_endpoint,
)
from enclave.client._document import _STEP_OF_REASON
from enclave.client._endpoint import MAX_REPORT_BYTES
from enclave_dev.tee import SimulatedMeasurements
from tests.integration.client import attacks
from tests.integration.client.attacker import STARTED, AttackerTd, running_attacker
from tests.integration.client.attacks import ATTACKS, BEHAVIOURS, CANARY, pinned
from tests.integration.client.conftest import Running, StaticCollateral

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The client's own reason codes (enclave/client/errors.py), besides attestation's.
CLIENT_REASONS = frozenset(
    {
        "endpoint_unreachable",
        "not_verified",
        "report_unavailable",
        "report_too_large",
        "report_malformed",
        "report_certificate_mismatch",
        "ohttp_keys_mismatch",
        "ohttp_keys_unusable",
        "collateral_unavailable",
    }
)


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_each_attack_gets_its_reason_code(running: Running, name: str) -> None:
    attack = ATTACKS[name]
    with pytest.raises(AttestationFailed) as refused:
        await attack.run(running)
    assert refused.value.reason == attack.reason, refused.value


async def test_an_attacker_td_with_another_measurement_gets_no_token_and_no_prompt(
    running: Running,
) -> None:
    """The headline of issue 13: the load token (RA-TLS) and the prompt (OHTTP) never reach a
    TD whose MRTD or RTMR2 differs, although its quotes are genuine: not one request byte."""
    for run, reason in (
        (attacks.other_mrtd_gets_the_token, "mrtd_not_allowed"),
        (attacks.other_kernel_gets_the_prompt, "rtmr_not_allowed"),
    ):
        with pytest.raises(AttestationFailed) as refused:
            await run(running)
        assert refused.value.reason == reason
        # refused in the TLS layer: by the RA-TLS transport itself, or by the OHTTP
        # transport's endpoint verification (stage "certificate"), before any request
        assert refused.value.stage in ("", "certificate")
        attacker = STARTED[-1]
        assert attacker.received == b""  # the TLS handshake, then not one request byte
        assert CANARY.encode() not in attacker.received


async def test_an_endless_report_is_refused_while_it_streams(running: Running) -> None:
    with pytest.raises(AttestationFailed) as refused:
        await attacks.endless_report(running)
    assert refused.value.reason == "report_too_large"
    # The attacker would send 64 MiB; the client stopped at its 4 MiB cap (the attacker's
    # count also holds what sat in the socket buffers when the client closed: ~6 MiB here).
    assert MAX_REPORT_BYTES < STARTED[-1].sent_bytes < attacks.ENDLESS_LIMIT // 2


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
async def test_the_transport_follows_the_service(running: Running, name: str) -> None:
    attack, expected = BEHAVIOURS[name]
    outcome = await attack(running)
    assert outcome.accepted == expected


async def test_verify_endpoint_and_averify_endpoint(running: Running) -> None:
    """The documented entry points, sync (from a thread, as a script would) and async: the
    genuine service verifies under the pinned policy; another MRTD allow-list refuses it."""
    source = StaticCollateral(running.simulator)
    root = running.simulator.root_ca_der
    endpoint = await asyncio.to_thread(
        verify_endpoint, running.url, pinned(running), source, insecure_root_ca_der=root
    )
    assert endpoint.measurements_pinned
    assert endpoint.insecure == ("insecure_root_ca_der", "insecure_accept_service")
    assert "insecure_dev_engine" in endpoint.service_insecure
    assert endpoint.model is not None
    assert endpoint.model.name == "tiny"
    assert endpoint.measurements.mrtd == running.simulator.measurements.mrtd
    again = await averify_endpoint(running.url, pinned(running), source, insecure_root_ca_der=root)
    assert again.spki_sha256 == endpoint.spki_sha256
    assert again.nonce != endpoint.nonce  # a fresh nonce each time
    wrong = pinned(running, mrtd=frozenset({b"\x13" * 48}))
    with pytest.raises(AttestationFailed) as refused:
        await averify_endpoint(running.url, wrong, source, insecure_root_ca_der=root)
    assert refused.value.reason == "mrtd_not_allowed"
    assert refused.value.stage == "certificate"
    with pytest.raises(AttestationFailed) as refused:
        await asyncio.to_thread(verify_endpoint, running.url, wrong, source)  # Intel's root
    assert refused.value.reason == "cert_chain_invalid"


async def test_every_client_reason_code_has_an_attack() -> None:
    produced = {attack.reason for attack in ATTACKS.values()}
    assert produced >= CLIENT_REASONS, CLIENT_REASONS - produced
    # The verification document places every code at a step.
    assert (CLIENT_REASONS | Reason.ALL) - {"not_tls"} <= set(_STEP_OF_REASON)


async def test_the_sync_transports_refuse_another_measurement_too(running: Running) -> None:
    """The same attack through the sync RA-TLS and OHTTP transports (their own backend)."""
    other = running.simulator.with_measurements(SimulatedMeasurements(mrtd=b"\x66" * 48))
    async with running_attacker(AttackerTd(other)) as attacker:

        def send(ohttp: bool) -> str:
            verifier = attacks.verifier(running)
            transport: httpx.BaseTransport = (
                OhttpTransport(attacker.url, verifier) if ohttp else RaTlsTransport(verifier)
            )
            with httpx.Client(transport=transport, timeout=10) as client:
                try:
                    client.post(attacker.url + "/v1/models/load", headers={"X-Canary": CANARY})
                except AttestationFailed as refused:
                    return refused.reason
            return "sent"

        for ohttp in (False, True):
            assert await asyncio.to_thread(send, ohttp) == "mrtd_not_allowed"
        assert attacker.received == b""


async def test_a_refresh_then_the_new_certificate_is_not_verified_twice(running: Running) -> None:
    """Regression (test_model_reload_is_reverified... saw 3 verifications under load): after a
    max_age refresh has verified the reissued certificate on its own connection, a new outer
    connection showing that same certificate is no change and triggers no second refresh."""
    clock = [1000.0]
    outer = AsyncRaTlsTransport(attacks.verifier(running), keepalive_expiry=0.0)
    transport = AsyncOhttpTransport(
        running.url,
        attacks.verifier(running, clock=lambda: clock[0]),
        outer_transport=outer,
        max_age=60.0,
    )
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(running.url + "/v1/models")
        issued = running.server.certificates.current
        await running.load_model("other")
        try:
            await attacks._reissued_since(running, issued)
            clock[0] += 61.0
            response = await client.get(running.url + "/v1/models")
        finally:
            await running.load_model("tiny")
    endpoint = attested_endpoint(response)
    assert endpoint is not None
    assert endpoint.model is not None
    assert endpoint.model.name == "other"
    assert transport.refreshes == 2
