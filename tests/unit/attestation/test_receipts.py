"""Receipts (attestation.receipt): the vectors of tests/vectors/receipts (scripts/gen-receipt-
vectors) checked the way a second implementation would, offline verification of each, every
tampered byte refused with its own reason, and each check's mutation (disabled, its attack
gets through)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
from collections.abc import Callable
from functools import partial

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from attestation import receipt as _receipt
from attestation.checks import Reason
from attestation.evidence import Evidence, ModelClaim
from attestation.policy import load_policy, pinned_policy
from attestation.ratls import RaTlsIssuer, parse_certificate
from attestation.receipt import (
    CONTEXT,
    EvidenceBundle,
    Receipt,
    ReceiptError,
    ReceiptSigner,
    SseDataDigest,
    VerifiedReceipt,
    attach_member,
    decode_receipt,
    jcs,
    load_evidence,
    response_digest_of,
    verify_receipt,
)
from enclave_dev.tee import Simulator
from tests.vectors import load_bytes, load_json, vector_path

VECTORS = load_json("receipts/receipts.json")
IDS = [case["document"]["id"] for case in VECTORS["cases"]]
ROOT_PEM = load_bytes("receipts/root_ca.pem")


def _root_der() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return x509.load_pem_x509_certificate(ROOT_PEM).public_bytes(serialization.Encoding.DER)


ROOT_DER = _root_der()
POLICY = load_policy(vector_path("receipts/policy.toml"))
BUNDLE = load_evidence(load_bytes("receipts/bundle.json"))


def _files(receipt_id: str) -> tuple[bytes, bytes, bytes]:
    return (
        load_bytes(f"receipts/{receipt_id}.json"),
        load_bytes(f"receipts/{receipt_id}.request"),
        load_bytes(f"receipts/{receipt_id}.response"),
    )


def _verify(
    receipt: bytes | Receipt,
    request: bytes | None = None,
    response: bytes | None = None,
    bundle: EvidenceBundle = BUNDLE,
) -> VerifiedReceipt:
    return verify_receipt(
        receipt,
        bundle,
        policy=POLICY,
        insecure_root_ca_der=ROOT_DER,
        request=request,
        response=response,
    )


def _reason(call: Callable[[], object]) -> str | None:
    try:
        call()
    except ReceiptError as exc:
        return exc.reason
    return None


# --- the vectors, as a second implementation checks them ------------------------------------


def test_the_vector_key_comes_from_the_seed() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["seed_hex"]))
    signer = ReceiptSigner(key)
    assert signer.public_key.hex() == VECTORS["public_key_hex"]
    assert hashlib.sha256(signer.public_key).hexdigest() == VECTORS["receipt_key_claim_hex"]
    assert bytes.fromhex(VECTORS["context_hex"]) == CONTEXT == b"enclave-receipt-v1\x00"


@pytest.mark.parametrize("case", VECTORS["cases"], ids=IDS)
def test_each_vector_case_holds_byte_for_byte(case: dict[str, object]) -> None:
    document = case["document"]
    assert jcs(document).decode() == case["document_jcs"]
    message = bytes.fromhex(str(case["signed_message_hex"]))
    assert message == CONTEXT + jcs(document)
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(VECTORS["public_key_hex"]))
    public.verify(bytes.fromhex(str(case["signature"])), message)
    assert (
        case["receipt_file"] == jcs({"receipt": document, "signature": case["signature"]}).decode()
    )
    assert isinstance(document, dict)
    request = base64.b64decode(str(case["request_b64"]))
    hashed = base64.b64decode(str(case["response_hashed_b64"]))
    assert hashlib.sha256(request).hexdigest() == document["request_sha256"]
    assert hashlib.sha256(hashed).hexdigest() == document["response_sha256"]
    header = str(case["header"])
    assert (
        base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        == str(case["receipt_file"]).encode()
    )
    assert document["quote_sha256"] == VECTORS["quote_sha256"]


@pytest.mark.parametrize("receipt_id", IDS)
def test_each_vector_verifies_offline_with_its_request_and_response(receipt_id: str) -> None:
    receipt, request, response = _files(receipt_id)
    verified = _verify(receipt, request, response)
    assert verified.request_checked
    assert verified.response_checked


def test_jcs_is_rfc8785_for_what_receipts_hold() -> None:
    assert jcs({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert jcs('\u2028\x1f"\\é') == '"\u2028\\u001f\\"\\\\é"'.encode()
    # RFC 8785 3.2.3: UTF-16 code units, so U+1F600 (D83D DE00) sorts before U+FB33
    assert jcs({"\ufb33": 1, "\U0001f600": 2, "\u20ac": 3}) == (
        '{"\u20ac":3,"\U0001f600":2,"\ufb33":1}'.encode()
    )
    for bad in (1.5, 2**53, "\ud800", {1: 2}):
        with pytest.raises(ValueError, match=r".+"):
            jcs(bad)


# --- every byte tampered --------------------------------------------------------------------


@pytest.mark.parametrize("receipt_id", IDS)
def test_every_byte_of_the_request_is_covered(receipt_id: str) -> None:
    receipt, request, response = _files(receipt_id)
    parsed = decode_receipt(receipt)
    for index in range(len(request)):
        tampered = _flip(request, index)
        assert _reason(partial(_receipt.check_request, parsed, tampered)) == "request_mismatch"
    assert _reason(partial(_verify, receipt, request[:-1], response)) == "request_mismatch"
    # trailing JSON whitespace is padding (the RA-TLS client adds it): the same document
    assert _reason(partial(_verify, receipt, request + b"  \t\r\n", response)) is None
    assert _reason(partial(_verify, receipt, request + b"\x0b", response)) == "request_mismatch"


def _covered(response: bytes, kind: str) -> list[int]:
    """The byte offsets of a response the receipt covers: all of a JSON answer; in a stream,
    every byte before the receipt event but comment (padding) lines, and the receipt member."""
    if kind != "sse-lines":
        return list(range(len(response)))
    start = response.rfind(b"\n" + _receipt.SSE_MARKER) + 1
    member_end = (
        start
        + len(_receipt.SSE_MARKER)
        + response[start:].index(b',"choices"')
        - len(_receipt.SSE_MARKER)
    )
    offsets: list[int] = []
    at = 0
    for line in response[:start].split(b"\n"):
        if not line.startswith(b":"):
            offsets += range(at, at + len(line) + 1)
        else:  # a comment's own newline still counts: the blank line after it would merge
            offsets.append(at + len(line))
        at += len(line) + 1
    return [o for o in offsets if o < start] + list(range(start, member_end))


@pytest.mark.parametrize("receipt_id", IDS)
def test_every_covered_byte_of_the_response_is_covered(receipt_id: str) -> None:
    receipt, request, response = _files(receipt_id)
    parsed = decode_receipt(receipt)
    for index in _covered(response, parsed.response_hash):
        tampered = _flip(response, index)
        assert _reason(partial(_receipt.check_response, parsed, tampered)) == (
            "response_mismatch"
        ), (index, tampered[max(0, index - 10) : index + 10])
    changed = response.replace(b"Hi", b"Ho").replace(b"a time", b"a tame")
    assert _reason(partial(_verify, receipt, request, changed)) == "response_mismatch"


@pytest.mark.parametrize("receipt_id", IDS)
def test_every_byte_of_the_receipt_is_covered(receipt_id: str) -> None:
    receipt, _, _ = _files(receipt_id)
    for index in range(len(receipt)):
        assert _reason(partial(_verify, _flip(receipt, index))) in (
            "receipt_malformed",
            "receipt_version_unsupported",
            "receipt_signature_invalid",
        ), index
    assert _reason(lambda: _verify(receipt + b"\n")) == "receipt_malformed"


def test_every_byte_of_the_certificate_is_covered() -> None:
    receipt, _, _ = _files(IDS[0])
    der = BUNDLE.certificate_der
    for index in range(0, len(der)):
        bundle = dataclasses.replace(BUNDLE, certificate_der=_flip(der, index))
        assert _reason(partial(_verify, receipt, bundle=bundle)) == "evidence_malformed", index


# --- the evidence itself tampered, in a certificate its own key signs -------------------------


def _issue(
    simulator: Simulator, signer: ReceiptSigner, change: Callable[[Evidence], Evidence]
) -> bytes:
    async def quote(report_data: bytes) -> bytes:
        return simulator.quote(report_data)

    model = ModelClaim("tiny", "manifest-sha256", hashlib.sha256(b"m").digest())
    issuer = RaTlsIssuer(quote, receipt_key=signer.claim)
    claims = issuer.claims(ohttp_keys_body=b"keys", model=model, service_version="t")
    evidence = asyncio.run(issuer.evidence(claims))
    return issuer._sign(change(evidence), claims).certificate_der


def _signed(
    signer: ReceiptSigner, certificate: bytes, model: ModelClaim | None = None, **kw: object
) -> Receipt:
    quote = parse_certificate(certificate).evidence.quote
    fields: dict[str, object] = {
        "route": "/v1/chat/completions",
        "request_sha256": hashlib.sha256(b"q").digest(),
        "response_sha256": hashlib.sha256(b"a").digest(),
        "response_hash": "body",
        "model": model or ModelClaim("tiny", "manifest-sha256", hashlib.sha256(b"m").digest()),
        "generation": 1,
        "time": 0,
        "quote_sha256": hashlib.sha256(quote).digest(),
    }
    fields.update(kw)
    return signer.sign(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def simulated() -> tuple[Simulator, ReceiptSigner, bytes]:
    simulator = Simulator.create()
    signer = ReceiptSigner()
    return simulator, signer, _issue(simulator, signer, lambda e: e)


Simulated = tuple[Simulator, ReceiptSigner, bytes]


def _check(simulated: Simulated, certificate: bytes, receipt: Receipt) -> str | None:
    simulator = simulated[0]
    policy = pinned_policy(simulator.measurements.registers())
    return _reason(
        lambda: verify_receipt(
            receipt,
            EvidenceBundle(certificate, simulator.collateral_json()),
            policy=policy,
            insecure_root_ca_der=simulator.root_ca_der,
            request=b"q",
            response=b"a",
        )
    )


def test_a_receipt_for_simulated_evidence_verifies(simulated: Simulated) -> None:
    simulator, signer, certificate = simulated
    assert _check(simulated, certificate, _signed(signer, certificate, time=simulator.now)) is None


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


EVIDENCE_REASONS = frozenset(Reason.ALL) | {"evidence_malformed", "quote_malformed"}


def test_any_byte_of_the_evidence_changed_is_refused_by_the_evidence_steps(
    simulated: Simulated,
) -> None:
    simulator, signer, _ = simulated
    sizes = {}

    def size(e: Evidence) -> Evidence:
        sizes["quote"], sizes["claims"] = len(e.quote), len(e.claims_buffer)
        return e

    receipt = _signed(signer, _issue(simulator, signer, size), time=simulator.now)
    seen = set()
    # every byte of the claims buffer, and of the quote every 97th byte and its first 64
    quote_offsets = sorted(set(range(0, sizes["quote"], 97)) | set(range(64)))
    for part, offsets in (("claims", range(sizes["claims"])), ("quote", quote_offsets)):
        for index in offsets:

            def change(e: Evidence, part: str = part, index: int = index) -> Evidence:
                if part == "quote":
                    return Evidence(_flip(e.quote, index), e.claims_buffer)
                return Evidence(e.quote, _flip(e.claims_buffer, index))

            certificate = _issue(simulator, signer, change)
            reason = _check(simulated, certificate, receipt)
            # a quote byte DCAP does not cover still changes the quote the receipt names
            assert reason in EVIDENCE_REASONS | {"receipt_quote_mismatch"}, (part, index, reason)
            seen.add(reason)
    assert len(seen) >= 2  # refused by different steps: parsing, DCAP, report_data...


# --- each check's mutation: disabled, its attack gets through --------------------------------


def _attacks(simulated: Simulated) -> dict[str, tuple[str, Callable[[], str | None], str]]:
    simulator, signer, certificate = simulated
    now = simulator.now
    other = ReceiptSigner()
    good = _signed(signer, certificate, time=now)
    forged = Receipt(good.document, bytes(64), good.encoded)
    signature = certificate[:-3] + bytes([certificate[-3] ^ 1]) + certificate[-2:]
    return {
        "signature": (
            "receipt_signature_invalid",
            lambda: _check(simulated, certificate, forged),
            "verify_signature",
        ),
        "key": (
            "receipt_key_mismatch",
            lambda: _check(simulated, certificate, _signed(other, certificate, time=now)),
            "check_key",
        ),
        "quote": (
            "receipt_quote_mismatch",
            lambda: _check(
                simulated,
                certificate,
                _signed(signer, certificate, time=now, quote_sha256=bytes(32)),
            ),
            "check_quote",
        ),
        "model": (
            "receipt_model_mismatch",
            lambda: _check(
                simulated,
                certificate,
                _signed(signer, certificate, ModelClaim("tiny", "dm-verity", b"\x01"), time=now),
            ),
            "check_model",
        ),
        "request": (
            "request_mismatch",
            lambda: _check(
                simulated,
                certificate,
                _signed(signer, certificate, time=now, request_sha256=bytes(32)),
            ),
            "check_request",
        ),
        "response": (
            "response_mismatch",
            lambda: _check(
                simulated,
                certificate,
                _signed(signer, certificate, time=now, response_sha256=bytes(32)),
            ),
            "check_response",
        ),
        "self-signed certificate": (
            "evidence_malformed",
            lambda: _check(simulated, signature, _signed(signer, signature, time=now)),
            "_check_self_signed",
        ),
    }


MUTATIONS = ("signature", "key", "quote", "model", "request", "response", "self-signed certificate")


@pytest.mark.parametrize("name", MUTATIONS)
def test_each_receipt_check_stops_its_attack(simulated: Simulated, name: str) -> None:
    reason, attack, _ = _attacks(simulated)[name]
    assert attack() == reason


@pytest.mark.parametrize("name", MUTATIONS)
def test_disabling_a_receipt_check_lets_its_attack_through(
    simulated: Simulated, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    reason, attack, target = _attacks(simulated)[name]
    if hasattr(Receipt, target):
        monkeypatch.setattr(Receipt, target, lambda *args: None)
    else:
        monkeypatch.setattr(_receipt, target, lambda *args: None)
    assert attack() != reason


def test_a_newer_version_and_a_foreign_shape_are_refused() -> None:
    receipt, _, _ = _files(IDS[1])
    parsed = decode_receipt(receipt)
    newer = jcs({"receipt": {**parsed.document, "version": 2}, "signature": parsed.signature.hex()})
    assert _reason(lambda: decode_receipt(newer)) == "receipt_version_unsupported"
    extra = jcs({"receipt": {**parsed.document, "x": 1}, "signature": parsed.signature.hex()})
    assert _reason(lambda: decode_receipt(extra)) == "receipt_malformed"
    assert _reason(lambda: decode_receipt(b"[]")) == "receipt_malformed"
    assert _reason(lambda: decode_receipt("!!")) == "receipt_malformed"


def test_the_body_member_and_the_sse_digest() -> None:
    signer = ReceiptSigner()
    receipt = signer.sign(
        route="/v1/embeddings",
        request_sha256=bytes(32),
        response_sha256=hashlib.sha256(b'{"a":1}').digest(),
        response_hash="json-member",
        model=ModelClaim("m", "dm-verity", b"\x01"),
        generation=0,
        time=0,
        quote_sha256=bytes(32),
    )
    sent = attach_member(b'{"a":1}\n', receipt)
    assert sent is not None
    assert sent.startswith(b'{"a":1,"enclave_receipt":{')
    assert response_digest_of(sent, receipt) == hashlib.sha256(b'{"a":1}').digest()
    assert attach_member(b"{ }", receipt) == b'{ "enclave_receipt":' + receipt.encoded + b"}"
    assert attach_member(b"[1]", receipt) is None
    digest = SseDataDigest()
    for piece in (b"data: a", b"b\n\n: pad\n\ndata:c\r\n\r\n", b"data: d"):
        digest.update(piece)
    assert digest.digest() == hashlib.sha256(b"data: ab\n\n\ndata:c\n\ndata: d\n").digest()
