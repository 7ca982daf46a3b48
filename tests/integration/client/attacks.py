"""The attacks on the client's binding checks, each a real service or man in the middle
presenting the mismatching thing (``attacker.AttackerTd`` on the same genuine platform as the
real service, or the real service itself in a state change). Each attack returns what the
client accepted, or raises ``AttestationFailed`` / ``GatewayRefused``: the test of a check
asserts its reason code, and the mutation test (``test_check_mutations``) disables the check
and asserts the same attack then no longer gets that answer.

``CHECKS`` names every check and the attack that proves it; a test holds that every client
reason code has one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpcore
import httpx
import pytest

from attestation import _dcap
from attestation import verify as _verify
from attestation.errors import CollateralError
from attestation.evidence import Evidence, ModelClaim
from attestation.policy import Policy
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    AttestationFailed,
    ResponseDecryptError,
    ResponseTruncated,
    Verifier,
    _backend,
    _endpoint,
    _ohttp,
    attest_endpoint,
    attested_endpoint,
)
from enclave_dev.tee import SimulatedMeasurements, Simulator
from tests.integration.client.attacker import (
    SERVICE_VERSION,
    AttackerTd,
    Reply,
    new_ohttp_keys,
    running_attacker,
)
from tests.integration.client.conftest import Running, StaticCollateral

__all__ = ["ATTACKS", "BEHAVIOURS", "CANARY", "MUTATIONS", "Attack", "Mutation", "Outcome"]

CANARY = "canary-attack-7c1e5b2d"
ENDLESS_LIMIT = 64 << 20  # the attacker gives up after this much (a client that reads it all)
REPORT_DATA_OFFSET = 48 + 584 - 64  # v4 quote header + TD report, report_data last


@dataclass
class Outcome:
    """What the client accepted, plus what the attacker saw."""

    accepted: object
    received: bytes = b""
    sent_bytes: int = 0


AttackFunction = Callable[[Running], Awaitable[Outcome]]


@dataclass(frozen=True)
class Attack:
    reason: str
    run: AttackFunction
    doc: str


def pinned(running: Running, **changes: object) -> Policy:
    """The client's policy: the genuine service's measurements (accepting the insecure
    settings the service under test declares: the development engine, the simulated TEE)."""
    return running.policy(**changes)


def verifier(running: Running, policy: Policy | None = None, **kwargs: object) -> Verifier:
    return running.verifier(policy or pinned(running), **kwargs)  # type: ignore[arg-type]


async def _against(
    running: Running,
    report: Callable[[AttackerTd, bytes], Awaitable[Reply]] | None = None,
    *,
    simulator: Simulator | None = None,
    policy: Policy | None = None,
    ohttp_keys: bytes | None = None,
) -> Outcome:
    """Verify an attacker TD (by default: the genuine image, misbehaving in ``report``)."""
    attacker = AttackerTd(simulator or running.simulator)
    if ohttp_keys is not None:
        attacker.ohttp_keys = ohttp_keys
    attacker.report = report
    async with running_attacker(attacker):
        endpoint = await attest_endpoint(verifier(running, policy), attacker.url)
    return Outcome(endpoint, bytes(attacker.received), attacker.sent_bytes)


# --- the report: what the service presents over the verified connection ------------------


async def ohttp_keys_swapped(running: Running) -> Outcome:
    """The evidence binds one set of key configurations; the report serves others (keys whose
    private halves the attacker holds outside the TD)."""
    outside = new_ohttp_keys()

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return attacker.document(await attacker.evidence(nonce=nonce), ohttp_keys=outside)

    return await _against(running, report)


async def receipt_key_swapped(running: Running) -> Outcome:
    """The report's evidence names a receipt key the certificate does not (receipts signed by
    a key held outside the TD would verify against the report, not against the pinned quote)."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        claims = attacker.issuer.claims(
            nonce=nonce,
            ohttp_keys_body=attacker.ohttp_keys,
            model=attacker.model,
            service_version=SERVICE_VERSION,
        )
        claims = dataclasses.replace(claims, receipt_key=hashlib.sha256(b"outside").digest())
        return attacker.document(await attacker.issuer.evidence(claims))

    return await _against(running, report)


async def other_certificate(running: Running) -> Outcome:
    """The report names a certificate other than the one the connection presented."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        other = await attacker.new_issuer().issue(
            ohttp_keys_body=attacker.ohttp_keys, service_version="0.1.0"
        )
        evidence = await attacker.evidence(nonce=nonce)
        return attacker.document(evidence, certificate_pem=other.certificate_pem.decode())

    return await _against(running, report)


async def relayed_evidence(running: Running) -> Outcome:
    """A man in the middle relays our nonce to another TD and returns that TD's fresh evidence
    (bound to that TD's TLS key) under the certificate of the connection we verified."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        elsewhere = attacker.new_issuer()
        return attacker.document(await attacker.evidence(nonce=nonce, issuer=elsewhere))

    return await _against(running, report)


async def replayed_nonce(running: Running) -> Outcome:
    """A report captured earlier (another nonce) replayed."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return attacker.document(await attacker.evidence(nonce=bytes(32)))

    return await _against(running, report)


async def no_nonce(running: Running) -> Outcome:
    """The certificate's own (nonce-less) evidence presented as the fresh report."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return attacker.document(await attacker.evidence(nonce=None))

    return await _against(running, report)


async def claims_swapped(running: Running) -> Outcome:
    """A genuine quote over one claims buffer, presented with another (other keys)."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        genuine = await attacker.evidence(nonce=nonce)
        other = await attacker.evidence(nonce=nonce, ohttp_keys=new_ohttp_keys())
        return attacker.document(Evidence(genuine.quote, other.claims_buffer))

    return await _against(running, report)


async def no_key_claim(running: Running) -> Outcome:
    """Evidence without the ohttp-keys claim: keys bound to nothing."""

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return attacker.document(await attacker.evidence(nonce=nonce, claimed_keys=False))

    return await _against(running, report)


async def unusable_keys(running: Running) -> Outcome:
    """Attested, but no key configuration the client can encrypt to (an unknown KEM)."""
    unknown_kem = bytes.fromhex("002901ffff0004") + b"\x00" * 4 + bytes.fromhex("000400010001")
    return await _against(running, ohttp_keys=unknown_kem)


async def endless_report(running: Running) -> Outcome:
    """A report that never ends: the client must stop reading at its cap (MAX_REPORT_BYTES)
    while it streams in, not buffer it all and look afterwards."""

    async def pieces() -> AsyncIterator[bytes]:
        sent = 0
        while sent < ENDLESS_LIMIT:
            yield b"x" * 65536
            sent += 65536

    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return Reply(pieces=pieces())

    attacker = AttackerTd(running.simulator)
    attacker.report = report
    async with running_attacker(attacker):
        try:
            endpoint: object = await attest_endpoint(verifier(running), attacker.url)
        except AttestationFailed as exc:
            if attacker.sent_bytes < ENDLESS_LIMIT:
                raise
            endpoint = exc  # refused only after reading all of it: the attack worked
    return Outcome(endpoint, sent_bytes=attacker.sent_bytes)


async def declared_huge(running: Running) -> Outcome:
    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return Reply(body=b"{}", content_length=1 << 40)

    return await _against(running, report)


async def report_refused(running: Running) -> Outcome:
    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return Reply(status=503, body=b'{"error": {}}')

    return await _against(running, report)


async def report_garbage(running: Running) -> Outcome:
    async def report(attacker: AttackerTd, nonce: bytes) -> Reply:
        return Reply(body=b"<html>not the report</html>")

    return await _against(running, report)


async def report_not_over_ratls(running: Running) -> Outcome:
    """A caller hands attest_endpoint a plain TLS client: the report is not tied to a verified
    connection, so it proves nothing."""
    async with httpx.AsyncClient(verify=False) as plain:
        endpoint = await attest_endpoint(verifier(running), running.url, client=plain)
    return Outcome(endpoint)


async def unreachable(running: Running) -> Outcome:
    import socket

    with socket.socket() as sock:  # bound, not listening: connection refused
        sock.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{sock.getsockname()[1]}"
        return Outcome(await attest_endpoint(verifier(running), url))


class _NoCollateral:
    async def get_collateral(self, quote: bytes) -> object:
        raise CollateralError("the PCCS is down")


async def collateral_down(running: Running) -> Outcome:
    failing = Verifier(
        _NoCollateral(),  # type: ignore[arg-type]
        policy=pinned(running),
        insecure_root_ca_der=running.simulator.root_ca_der,
    )
    return Outcome(await attest_endpoint(failing, running.url))


# --- the TD itself: another image, or another platform ----------------------------------


async def _send_canary(running: Running, attacker: AttackerTd, ohttp: bool) -> Outcome:
    """Send a prompt (OHTTP) or a load token (RA-TLS) to the attacker; return what it got."""
    client_verifier = verifier(running)
    async with running_attacker(attacker):
        if ohttp:
            transport: httpx.AsyncBaseTransport = AsyncOhttpTransport(attacker.url, client_verifier)
        else:
            transport = AsyncRaTlsTransport(client_verifier)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            try:
                response: object = await client.post(
                    attacker.url + ("/v1/chat/completions" if ohttp else "/v1/models/load"),
                    json={"messages": [{"role": "user", "content": CANARY}], "model": "tiny"},
                    headers={"Authorization": f"Bearer {CANARY}"},
                )
            except (ResponseTruncated, ResponseDecryptError) as exc:
                response = exc  # sent, encrypted to the attacker's keys; its answer is no OHTTP
    return Outcome(response, bytes(attacker.received))


async def other_mrtd_gets_the_token(running: Running) -> Outcome:
    """An attacker TD with a different MRTD (its own firmware) on the genuine platform; the
    client sends a load token over RA-TLS."""
    other = running.simulator.with_measurements(SimulatedMeasurements(mrtd=b"\x66" * 48))
    return await _send_canary(running, AttackerTd(other), ohttp=False)


async def other_kernel_gets_the_prompt(running: Running) -> Outcome:
    """An attacker TD with a different command line (RTMR2) gets an OHTTP prompt."""
    rtmrs = running.simulator.measurements.rtmrs
    other = running.simulator.with_measurements(
        SimulatedMeasurements(rtmrs=(rtmrs[0], rtmrs[1], b"\x77" * 48, rtmrs[3]))
    )
    return await _send_canary(running, AttackerTd(other), ohttp=True)


async def other_model(running: Running) -> Outcome:
    """The genuine image serving a model the policy does not allow."""
    allowed = pinned(running, allowed_model_digests=frozenset({b"\x01" * 32}))
    attacker = AttackerTd(running.simulator, model=ModelClaim("evil", "dm-verity", b"\x02" * 32))
    async with running_attacker(attacker):
        return Outcome(await attest_endpoint(verifier(running, allowed), attacker.url))


async def debug_td(running: Running) -> Outcome:
    """The genuine image launched in debug mode (the host can read its memory)."""
    debug = running.simulator.with_measurements(
        SimulatedMeasurements(td_attributes=bytes.fromhex("0100001000000000"))
    )
    policy = pinned(running)
    return await _against(running, simulator=debug, policy=policy)


async def forged_quote(running: Running) -> Outcome:
    """The attacker edits report_data in a genuine quote to bind its own claims."""
    sim = running.simulator
    attacker = AttackerTd(sim)

    async def forge(report_data: bytes) -> bytes:
        quote = bytearray(sim.quote(bytes(64)))
        quote[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + 64] = report_data
        return bytes(quote)

    attacker.issuer._get_quote = forge  # the attacker's own software quotes what it likes
    async with running_attacker(attacker):
        return Outcome(await attest_endpoint(verifier(running), attacker.url))


async def foreign_platform(running: Running) -> Outcome:
    """A TD with the right measurements on a platform whose PKI is not the trusted root."""
    foreign = Simulator.create(measurements=running.simulator.measurements)
    return await _against(running, simulator=foreign)


async def outdated_platform(running: Running) -> Outcome:
    """The genuine image on a platform whose TCB is out of date (collateral says so)."""
    old = Simulator.create(tcb="OutOfDate", measurements=running.simulator.measurements)
    attacker = AttackerTd(old)
    trusting = Verifier(
        StaticCollateral(old), policy=pinned(running), insecure_root_ca_der=old.root_ca_der
    )
    async with running_attacker(attacker):
        return Outcome(await attest_endpoint(trusting, attacker.url))


# --- the real service changing under a live transport -----------------------------------


async def certificate_reissued(running: Running) -> Outcome:
    """The service reissues its certificate (here: a model change) while a transport is in use,
    and a new connection shows the new certificate. The transport must verify again at once
    (not at max_age), so what it reports, and encrypts to, is the new state. Accepted value:
    (model before, model after, endpoint verifications)."""
    outer = AsyncRaTlsTransport(verifier(running), keepalive_expiry=0.0)  # a new connection each
    transport = AsyncOhttpTransport(running.url, verifier(running), outer_transport=outer)
    async with httpx.AsyncClient(transport=transport) as client:
        before = attested_endpoint(await client.get(running.url + "/v1/models"))
        issued = running.server.certificates.current
        await running.load_model("other")
        try:
            await _reissued_since(running, issued)
            after = attested_endpoint(await client.get(running.url + "/v1/models"))
        finally:
            await running.load_model("tiny")
    if before is None or after is None:
        raise AssertionError("no attested endpoint on the responses")
    names = tuple(None if e.model is None else e.model.name for e in (before, after))
    return Outcome((*names, transport.refreshes))


async def _reissued_since(running: Running, issued: object) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while running.server.certificates.current is issued:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the certificate was not reissued")
        await asyncio.sleep(0.02)


async def keys_rotated_and_removed(running: Running) -> Outcome:
    """The service rotates its OHTTP keys and drops the old ones at once; a transport still
    holding the old configuration gets the gateway's ``ohttp-key`` problem and must verify
    again and retry (once) with the new keys. Accepted value: (first status, second status,
    endpoint verifications)."""
    transport = AsyncOhttpTransport(running.url, verifier(running))
    async with httpx.AsyncClient(transport=transport) as client:
        first = await client.get(running.url + "/v1/models")
        retired = running.server.key_store.active_configs
        await running.server.rotate_keys()
        for config in retired:
            running.server.key_store.remove(config.key_id)
        second = await client.get(running.url + "/v1/models")
    return Outcome((first.status_code, second.status_code, transport.refreshes))


#: Attacks answered with a reason code: name -> (reason, attack).
ATTACKS: dict[str, Attack] = {
    name: Attack(reason, run, run.__doc__ or "")
    for name, reason, run in [
        ("ohttp_keys_swapped", "ohttp_keys_mismatch", ohttp_keys_swapped),
        ("receipt_key_swapped", "receipt_key_mismatch", receipt_key_swapped),
        ("other_certificate", "report_certificate_mismatch", other_certificate),
        ("relayed_evidence", "pubkey_hash_mismatch", relayed_evidence),
        ("replayed_nonce", "nonce_mismatch", replayed_nonce),
        ("no_nonce", "nonce_missing", no_nonce),
        ("claims_swapped", "report_data_mismatch", claims_swapped),
        ("no_key_claim", "claims_incomplete", no_key_claim),
        ("unusable_keys", "ohttp_keys_unusable", unusable_keys),
        ("endless_report", "report_too_large", endless_report),
        ("declared_huge", "report_too_large", declared_huge),
        ("report_refused", "report_unavailable", report_refused),
        ("report_garbage", "report_malformed", report_garbage),
        ("report_not_over_ratls", "not_verified", report_not_over_ratls),
        ("unreachable", "endpoint_unreachable", unreachable),
        ("collateral_down", "collateral_unavailable", collateral_down),
        ("other_mrtd_gets_the_token", "mrtd_not_allowed", other_mrtd_gets_the_token),
        ("other_kernel_gets_the_prompt", "rtmr_not_allowed", other_kernel_gets_the_prompt),
        ("other_model", "model_not_allowed", other_model),
        ("debug_td", "td_debug", debug_td),
        ("forged_quote", "quote_signature_invalid", forged_quote),
        ("foreign_platform", "cert_chain_invalid", foreign_platform),
        ("outdated_platform", "tcb_status_not_allowed", outdated_platform),
    ]
}

#: What the transports must do when the service changes under them: name -> (attack, the
#: accepted value that shows the behaviour).
BEHAVIOURS: dict[str, tuple[AttackFunction, object]] = {
    "reverify_on_new_certificate": (certificate_reissued, ("tiny", "other", 2)),
    "retry_on_ohttp_key_problem": (keys_rotated_and_removed, (200, 200, 2)),
}


# --- the checks, and how a mutation disables each -----------------------------------------


@dataclass(frozen=True)
class Mutation:
    """Disable the check ``target`` (module.function it lives in); ``attack`` (a name in
    ATTACKS or BEHAVIOURS) must then no longer get its answer."""

    target: str
    attack: str
    disable: Callable[[pytest.MonkeyPatch], None]


def _noop(*args: object, **kwargs: object) -> None:
    return None


async def _read_after_the_fact(response: httpx.Response) -> bytes:
    """The cap as it was before issue 13: checked after the whole body was read."""
    body = await response.aread()
    if len(body) > _endpoint.MAX_REPORT_BYTES:
        raise AttestationFailed("report_too_large")
    return body


async def _start_tls_unverified(
    self: _backend._AsyncStream,
    ssl_context: ssl.SSLContext,
    server_hostname: str | None = None,
    timeout: float | None = None,
) -> httpcore.AsyncNetworkStream:
    tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
    return _backend._AsyncStream(tls, self._verifier, object())  # type: ignore[arg-type]


def _without_nonce(original: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
    async def verify_evidence(self: Verifier, evidence: bytes, **kwargs: object) -> object:
        return await original(self, evidence, spki_der=kwargs["spki_der"], nonce=None)

    return verify_evidence


def _dcap_passes(*args: object) -> _dcap.DcapVerdict:
    return _dcap.DcapVerdict("UpToDate", ())


def _set(target: object, name: str, value: object) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(target, name, value)


MUTATIONS: dict[str, Mutation] = {
    "client step 1: certificate evidence verified in the TLS layer": Mutation(
        "enclave.client._backend._AsyncStream.start_tls",
        "other_mrtd_gets_the_token",
        _set(_backend._AsyncStream, "start_tls", _start_tls_unverified),
    ),
    "client step 2: report size capped while it streams": Mutation(
        "enclave.client._endpoint._read_capped",
        "endless_report",
        _set(_endpoint, "_read_capped", _read_after_the_fact),
    ),
    "client step 2: a declared size over the cap is refused before reading": Mutation(
        "enclave.client._endpoint._read_capped",
        "declared_huge",
        _set(_endpoint, "_read_capped", _read_after_the_fact),
    ),
    "client step 3: the report's certificate is the connection's": Mutation(
        "enclave.client._endpoint.check_report_certificate",
        "other_certificate",
        _set(_endpoint, "check_report_certificate", _noop),
    ),
    "client step 4: the report is verified with our nonce": Mutation(
        "enclave.client._verifier.Verifier.verify_evidence",
        "replayed_nonce",
        lambda mp: mp.setattr(
            Verifier, "verify_evidence", _without_nonce(Verifier.verify_evidence)
        ),
    ),
    "client step 5: the served key configurations are the attested ones": Mutation(
        "enclave.client._endpoint.check_ohttp_keys",
        "ohttp_keys_swapped",
        _set(_endpoint, "check_ohttp_keys", _noop),
    ),
    "client step 8: the report's receipt key is the certificate's": Mutation(
        "enclave.client._endpoint.check_receipt_key",
        "receipt_key_swapped",
        _set(_endpoint, "check_receipt_key", lambda claims, claim: None),
    ),
    "client step 6: a key configuration the client can use": Mutation(
        "enclave.client._endpoint.usable_key_configs",
        "unusable_keys",
        _set(_endpoint, "usable_key_configs", lambda keys: ()),
    ),
    "transport: verify again when the service presents a new certificate": Mutation(
        "enclave.client._ohttp._Common.certificate_changed",
        "reverify_on_new_certificate",
        _set(_ohttp._Common, "certificate_changed", lambda self, outer, endpoint: False),
    ),
    "transport: verify again and retry on the ohttp-key problem": Mutation(
        "enclave.client._ohttp.is_ohttp_key_problem",
        "retry_on_ohttp_key_problem",
        _set(_ohttp, "is_ohttp_key_problem", lambda status, body: False),
    ),
    "attestation step 2: DCAP (quote signature)": Mutation(
        "attestation._dcap.verify_quote_dcap",
        "forged_quote",
        _set(_dcap, "verify_quote_dcap", _dcap_passes),
    ),
    "attestation step 2: DCAP (the trusted root)": Mutation(
        "attestation._dcap.verify_quote_dcap",
        "foreign_platform",
        _set(_dcap, "verify_quote_dcap", _dcap_passes),
    ),
    "attestation step 4: TCB status": Mutation(
        "attestation.verify.check_tcb_status",
        "outdated_platform",
        _set(_verify, "check_tcb_status", _noop),
    ),
    "attestation step 6: report_data binds the claims": Mutation(
        "attestation.verify.check_report_data",
        "claims_swapped",
        _set(_verify, "check_report_data", _noop),
    ),
    "attestation step 7: pubkey-hash binds the connection's key": Mutation(
        "attestation.verify.check_pubkey_hash",
        "relayed_evidence",
        _set(_verify, "check_pubkey_hash", _noop),
    ),
    "attestation step 8: the nonce is ours": Mutation(
        "attestation.verify.check_nonce",
        "replayed_nonce",
        _set(_verify, "check_nonce", _noop),
    ),
    "attestation step 10: measurements (MRTD)": Mutation(
        "attestation.verify.check_measurements",
        "other_mrtd_gets_the_token",
        _set(_verify, "check_measurements", _noop),
    ),
    "attestation step 10: measurements (RTMR2)": Mutation(
        "attestation.verify.check_measurements",
        "other_kernel_gets_the_prompt",
        _set(_verify, "check_measurements", _noop),
    ),
    "attestation step 11: our claims are present": Mutation(
        "attestation.verify.check_enclave_claims",
        "no_key_claim",
        _set(_verify, "check_enclave_claims", _noop),
    ),
    "attestation step 11: model policy": Mutation(
        "attestation.verify.check_model",
        "other_model",
        _set(_verify, "check_model", _noop),
    ),
}
