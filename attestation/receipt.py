"""Signed answer receipts (sans-IO): the document, its canonical bytes, signing, verifying.

A receipt says, signed by the service's receipt key (an Ed25519 key made in memory at start,
whose public key's SHA-256 is the ``receipt-key`` claim of every certificate and report), which
exact request the service received and which exact response it sent, for which model (name,
digest kind, digest) and engine generation, when, under which RA-TLS certificate quote.

The format (docs/attestation.md section 9, version 1) is JSON canonicalised with JCS
(RFC 8785). Every value is a string, an integer (below 2**53) or an object of them, so JCS is
plain here: keys sorted, no whitespace, ECMAScript string escapes, UTF-8::

    envelope = {"receipt": document, "signature": hex(Ed25519(key, CONTEXT || JCS(document)))}
    document = {"version": 1, "id": "rcpt_" 32 hex, "route": text,
                "request_sha256": hex, "response_sha256": hex, "response_hash": kind,
                "model": {"name": text, "digest_kind": text, "digest": hex},
                "generation": int, "time": int (Unix seconds), "quote_sha256": hex,
                "key": hex (the raw 32-byte Ed25519 public key)}

``response_hash`` says what ``response_sha256`` covers:

- ``"sse-lines"`` (streamed answers): every line of the stream before the receipt's own event
  but comment lines (those starting with ``:``, which padding may use), in order, each with
  its line ending (LF or CRLF) replaced by one LF: the ``data:`` lines and the blank lines
  between events. The receipt event and the final ``data: [DONE]`` after it are not covered.
- ``"json-member"`` (non-streamed JSON answers): the body as sent with the receipt member
  (``"enclave_receipt":<envelope>`` and the comma before it) removed, which is the engine's
  body with trailing whitespace removed.
- ``"body"`` (any other body): the exact body bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from attestation.collateral import Collateral
from attestation.errors import AttestationError, VerificationError
from attestation.evidence import ModelClaim, receipt_key_digest
from attestation.policy import Policy
from attestation.ratls import _to_der, parse_certificate
from attestation.verify import VerifiedEvidence, verify_evidence

__all__ = [
    "CERTIFICATE_HEADER",
    "CERTIFICATE_MEMBER",
    "CONTEXT",
    "EVIDENCE_BUNDLE_KIND",
    "EVIDENCE_REQUEST_HEADER",
    "HEADER",
    "MEMBER",
    "REASONS",
    "RECEIPT_VERSION",
    "SSE_MARKER",
    "EvidenceBundle",
    "Receipt",
    "ReceiptError",
    "ReceiptSigner",
    "ResponseHash",
    "SseDataDigest",
    "VerifiedReceipt",
    "attach_member",
    "check_request",
    "check_response",
    "decode_receipt",
    "jcs",
    "json_member_base",
    "load_evidence",
    "request_digest",
    "response_digest_of",
    "verify_receipt",
]

RECEIPT_VERSION: Final = 1
#: Prefixed to the canonical document before signing: a receipt signature can never be mistaken
#: for a signature over anything else.
CONTEXT: Final = b"enclave-receipt-v1\x00"
#: The response header of a non-streamed answer: base64url (no padding) of JCS(envelope).
HEADER: Final = "enclave-receipt"
#: The JSON member of a non-streamed answer's body and of the streamed receipt event.
MEMBER: Final = "enclave_receipt"
#: Asked for with ``EVIDENCE_REQUEST_HEADER: certificate``, the answer also carries the signing
#: service's RA-TLS certificate (base64 DER): the ``enclave-receipt-certificate`` header of a
#: whole answer, the ``enclave_certificate`` member of the receipt event (not signed, not
#: covered: it is checked against the receipt's quote). Behind a balancer, the replica that
#: answered may not be the one the client verified; this is its evidence.
EVIDENCE_REQUEST_HEADER: Final = "x-enclave-receipt-evidence"
CERTIFICATE_HEADER: Final = "enclave-receipt-certificate"
CERTIFICATE_MEMBER: Final = "enclave_certificate"
MAX_RECEIPT_BYTES: Final = 16 * 1024
#: How the receipt event of a streamed answer starts (its first member is the receipt).
SSE_MARKER: Final = b'data: {"' + MEMBER.encode() + b'":'
ResponseHash = Literal["sse-lines", "json-member", "body"]
_RESPONSE_HASHES: Final = frozenset({"sse-lines", "json-member", "body"})
_MAX_SAFE_INTEGER: Final = 2**53 - 1
#: JSON's whitespace (RFC 8259): what padding appends to a JSON body, which the hashes drop.
JSON_WHITESPACE: Final = b" \t\n\r"

#: Every reason code receipt verification raises itself (evidence reasons come from
#: :mod:`attestation.verify`).
REASONS: Final = frozenset(
    {
        "receipt_malformed",
        "receipt_version_unsupported",
        "receipt_signature_invalid",
        "receipt_quote_mismatch",
        "receipt_key_mismatch",
        "receipt_model_mismatch",
        "request_mismatch",
        "response_mismatch",
    }
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"rcpt_[0-9a-f]{32}")
_DOCUMENT_KEYS: Final = frozenset(
    {
        "version",
        "id",
        "route",
        "request_sha256",
        "response_sha256",
        "response_hash",
        "model",
        "generation",
        "time",
        "quote_sha256",
        "key",
    }
)


class ReceiptError(AttestationError):
    """A receipt that does not verify; ``reason`` is a stable code (:data:`REASONS`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def jcs(value: object) -> bytes:
    """RFC 8785 canonical JSON of ``value`` (objects, arrays, strings, integers, booleans,
    null; no floats: receipts have none). Raises ValueError for anything else."""
    return _jcs(value).encode("utf-8")


def _jcs(value: object) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ValueError("integers in a receipt are below 2**53")
        return str(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a lone surrogate has no UTF-8 form
        except UnicodeEncodeError as exc:
            raise ValueError("a string with a lone surrogate") from exc
        # Python's escaping with ensure_ascii off is ECMAScript's JSON.stringify: the two-letter
        # escapes for \b \t \n \f \r " \\, \u00xx (lower-case hex) for other controls.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_jcs(item) for item in value) + "]"
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("object keys are strings")
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))  # UTF-16 code units
        return "{" + ",".join(_jcs(key) + ":" + _jcs(value[key]) for key in keys) + "}"
    raise ValueError(f"{type(value).__name__} has no place in a receipt")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A decoded receipt: the document, its signature, and its exact canonical bytes."""

    document: dict[str, object]
    signature: bytes
    #: JCS(envelope): the exact bytes a receipt file holds.
    encoded: bytes

    @property
    def id(self) -> str:
        return cast(str, self.document["id"])

    @property
    def key(self) -> bytes:
        return bytes.fromhex(cast(str, self.document["key"]))

    @property
    def quote_sha256(self) -> bytes:
        return bytes.fromhex(cast(str, self.document["quote_sha256"]))

    @property
    def request_sha256(self) -> bytes:
        return bytes.fromhex(cast(str, self.document["request_sha256"]))

    @property
    def response_sha256(self) -> bytes:
        return bytes.fromhex(cast(str, self.document["response_sha256"]))

    @property
    def response_hash(self) -> ResponseHash:
        return cast(ResponseHash, self.document["response_hash"])

    @property
    def time(self) -> int:
        return cast(int, self.document["time"])

    @property
    def model(self) -> ModelClaim:
        model = cast(dict[str, str], self.document["model"])
        return ModelClaim(
            model["name"],
            model["digest_kind"],  # type: ignore[arg-type]
            bytes.fromhex(model["digest"]),
        )

    @property
    def envelope(self) -> dict[str, object]:
        return {"receipt": self.document, "signature": self.signature.hex()}

    @property
    def header_value(self) -> str:
        return base64.urlsafe_b64encode(self.encoded).rstrip(b"=").decode("ascii")

    def verify_signature(self) -> None:
        """Raise ``receipt_signature_invalid`` unless the document's own key signed it.
        (Whether that key is the attested one is :func:`check_key`'s question.)"""
        try:
            Ed25519PublicKey.from_public_bytes(self.key).verify(
                self.signature, CONTEXT + jcs(self.document)
            )
        except (InvalidSignature, ValueError) as exc:
            raise ReceiptError("receipt_signature_invalid", "the signature does not verify") from (
                exc
            )

    def check_key(self, claimed: bytes | None) -> None:
        """Raise ``receipt_key_mismatch`` unless the key hashes to the ``receipt-key`` claim."""
        if claimed is None:
            raise ReceiptError("receipt_key_mismatch", "the evidence names no receipt key")
        if not hmac.compare_digest(receipt_key_digest(self.key), claimed):
            raise ReceiptError("receipt_key_mismatch", "the key is not the attested receipt key")

    def check_quote(self, quote: bytes) -> None:
        self.check_quote_sha256(hashlib.sha256(quote).digest())

    def check_quote_sha256(self, quote_sha256: bytes) -> None:
        if not hmac.compare_digest(quote_sha256, self.quote_sha256):
            raise ReceiptError("receipt_quote_mismatch", "the receipt names another quote")

    def check_model(self, claimed: ModelClaim | None) -> None:
        if claimed is None or claimed != self.model:
            raise ReceiptError(
                "receipt_model_mismatch", "the receipt's model is not the evidence's model claim"
            )


def decode_receipt(data: bytes | str | Mapping[str, object], *, canonical: bool = True) -> Receipt:
    """Decode a receipt envelope: a JSON text (the bytes of a receipt file; with
    ``canonical``, they must be exactly JCS(envelope)), a ``enclave-receipt`` header value
    (base64url), or an already parsed envelope (a streamed event's member). Checks the shape
    only; raises ``receipt_malformed`` or ``receipt_version_unsupported``."""
    raw: bytes | None = None
    if isinstance(data, str):
        try:
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        except (ValueError, binascii.Error) as exc:
            raise ReceiptError("receipt_malformed", "the header is not base64url") from exc
    elif isinstance(data, bytes):
        raw = data
    if raw is not None:
        if len(raw) > MAX_RECEIPT_BYTES:
            raise ReceiptError("receipt_malformed", f"larger than {MAX_RECEIPT_BYTES} bytes")
        try:
            parsed: object = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ReceiptError("receipt_malformed", "not JSON") from exc
    else:
        parsed = dict(cast(Mapping[str, object], data))
    if not isinstance(parsed, dict) or set(parsed) != {"receipt", "signature"}:
        raise ReceiptError("receipt_malformed", "an envelope is {receipt, signature}")
    document, signature = parsed["receipt"], parsed["signature"]
    if not isinstance(document, dict):
        raise ReceiptError("receipt_malformed", "'receipt' is not an object")
    version = document.get("version")
    if type(version) is not int:
        raise ReceiptError("receipt_malformed", "'version' is not an integer")
    if version != RECEIPT_VERSION:
        raise ReceiptError("receipt_version_unsupported", f"version {version}")
    _check_document(document)
    if not isinstance(signature, str) or not re.fullmatch(r"[0-9a-f]{128}", signature):
        raise ReceiptError("receipt_malformed", "'signature' is not 128 lower-case hex digits")
    try:
        encoded = jcs(parsed)
    except ValueError as exc:
        raise ReceiptError("receipt_malformed", str(exc)) from exc
    if canonical and raw is not None and raw != encoded:
        raise ReceiptError("receipt_malformed", "not the canonical (JCS) encoding")
    return Receipt(cast(dict[str, object], document), bytes.fromhex(signature), encoded)


def _check_document(document: dict[str, object]) -> None:
    if set(document) != _DOCUMENT_KEYS:
        raise ReceiptError("receipt_malformed", "the document's members are not version 1's")
    problems = []
    for name in ("request_sha256", "response_sha256", "quote_sha256", "key"):
        value = document[name]
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            problems.append(name)
    if not isinstance(document["id"], str) or not _ID.fullmatch(document["id"]):
        problems.append("id")
    if not isinstance(document["route"], str) or not document["route"].startswith("/"):
        problems.append("route")
    if document["response_hash"] not in _RESPONSE_HASHES:
        problems.append("response_hash")
    for name in ("generation", "time"):
        value = document[name]
        if type(value) is not int or not 0 <= value <= _MAX_SAFE_INTEGER:
            problems.append(name)
    model = document["model"]
    if not (
        isinstance(model, dict)
        and set(model) == {"name", "digest_kind", "digest"}
        and isinstance(model["name"], str)
        and model["name"]
        and model["digest_kind"] in ("dm-verity", "manifest-sha256")
        and isinstance(model["digest"], str)
        and re.fullmatch(r"(?:[0-9a-f]{2})+", model["digest"])
    ):
        problems.append("model")
    if problems:
        raise ReceiptError("receipt_malformed", "bad " + ", ".join(problems))


class ReceiptSigner:
    """The service's receipt key: Ed25519, made in memory, never serialised or written."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self._key = key if key is not None else Ed25519PrivateKey.generate()
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        #: The ``receipt-key`` claim.
        self.claim = receipt_key_digest(self.public_key)

    def sign(
        self,
        *,
        route: str,
        request_sha256: bytes,
        response_sha256: bytes,
        response_hash: ResponseHash,
        model: ModelClaim,
        generation: int,
        time: int,
        quote_sha256: bytes,
        receipt_id: str | None = None,
    ) -> Receipt:
        document: dict[str, object] = {
            "version": RECEIPT_VERSION,
            "id": receipt_id or "rcpt_" + secrets.token_hex(16),
            "route": route,
            "request_sha256": request_sha256.hex(),
            "response_sha256": response_sha256.hex(),
            "response_hash": response_hash,
            "model": {
                "name": model.name,
                "digest_kind": model.digest_kind,
                "digest": model.digest.hex(),
            },
            "generation": generation,
            "time": time,
            "quote_sha256": quote_sha256.hex(),
            "key": self.public_key.hex(),
        }
        signature = self._key.sign(CONTEXT + jcs(document))
        return Receipt(
            document, signature, jcs({"receipt": document, "signature": signature.hex()})
        )


class SseDataDigest:
    """The ``sse-lines`` response hash, fed the relayed stream's bytes in order (any cuts)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._line = b""

    def update(self, data: bytes) -> None:
        lines = (self._line + data).split(b"\n")
        self._line = lines.pop()
        for line in lines:
            self._take(line)

    def _take(self, line: bytes) -> None:
        line = line.removesuffix(b"\r")
        if not line.startswith(b":"):  # a comment line (padding) is the only one not covered
            self._hash.update(line + b"\n")

    def digest(self) -> bytes:
        if self._line:
            self._take(self._line)
            self._line = b""
        return self._hash.digest()


def attach_member(body: bytes, receipt: Receipt) -> bytes | None:
    """``body`` (a JSON object) with the receipt member appended, or None when it is not one.
    ``response_digest_of(result, receipt)`` is then SHA-256 of ``body.rstrip()``."""
    stripped = body.rstrip(JSON_WHITESPACE)
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        return None
    empty = stripped[:-1].rstrip(JSON_WHITESPACE) == b"{"
    return stripped[:-1] + (b"" if empty else b",") + _member(receipt) + b"}"


def _member(receipt: Receipt) -> bytes:
    return b'"' + MEMBER.encode() + b'":' + receipt.encoded


def json_member_base(body: bytes) -> bytes:
    """What a ``json-member`` hash covers of an engine body."""
    return body.rstrip(JSON_WHITESPACE)


def response_digest_of(sent: bytes, receipt: Receipt) -> bytes | None:
    """The SHA-256 ``receipt`` should name for a response body ``sent`` as it was received;
    None when ``sent`` carries a receipt other than ``receipt``."""
    kind = receipt.response_hash
    if kind == "sse-lines":
        digest = SseDataDigest()
        at = 0 if sent.startswith(SSE_MARKER) else sent.rfind(b"\n" + SSE_MARKER) + 1
        if at > 0 or sent.startswith(SSE_MARKER):
            carried = sent[at + len(SSE_MARKER) : at + len(SSE_MARKER) + len(receipt.encoded)]
            if carried != receipt.encoded:
                return None
            digest.update(sent[:at])
        else:  # a response kept without its receipt event
            digest.update(sent)
        return digest.digest()
    if kind == "json-member":
        body = sent.rstrip(JSON_WHITESPACE)
        member = _member(receipt)
        if body.endswith(member + b"}"):
            base = body[: -len(member) - 1].rstrip(JSON_WHITESPACE)
            body = (base[:-1] if base.endswith(b",") else base) + b"}"
        return hashlib.sha256(body).digest()
    return hashlib.sha256(sent).digest()


def request_digest(body: bytes) -> bytes:
    """``request_sha256``: SHA-256 of the request body with trailing JSON whitespace removed
    (clients pad a JSON request with trailing spaces to a size bucket; the same document)."""
    return hashlib.sha256(body.rstrip(JSON_WHITESPACE)).digest()


def check_request(receipt: Receipt, request: bytes) -> None:
    if not hmac.compare_digest(request_digest(request), receipt.request_sha256):
        raise ReceiptError("request_mismatch", "the request does not hash to the receipt's")


def check_response(receipt: Receipt, response: bytes) -> None:
    digest = response_digest_of(response, receipt)
    if digest is None or not hmac.compare_digest(digest, receipt.response_sha256):
        raise ReceiptError("response_mismatch", "the response does not hash to the receipt's")


# --- Offline verification -------------------------------------------------------------------

#: ``kind`` of an evidence bundle file (what ``enclave proxy --receipts`` keeps).
EVIDENCE_BUNDLE_KIND: Final = "enclave-receipt-evidence"
MAX_EVIDENCE_FILE: Final = 8 << 20


@dataclass(frozen=True, slots=True)
class EvidenceBundle:
    """The evidence a receipt is checked against: the RA-TLS certificate (its evidence and
    key) and, when kept, the collateral it was verified with and when."""

    certificate_der: bytes
    collateral_json: str | None = None
    verified_at: int | None = None
    endpoint: str | None = None
    gpu_evidence: tuple[str, ...] = ()

    def encode(self) -> bytes:
        """The bundle file: JCS JSON (a certificate in PEM, the collateral as its JSON text)."""
        pem = base64.encodebytes(self.certificate_der).decode("ascii").replace("\n", "")
        lines = [pem[i : i + 64] for i in range(0, len(pem), 64)]
        return jcs(
            {
                "kind": EVIDENCE_BUNDLE_KIND,
                "version": RECEIPT_VERSION,
                "certificate_pem": "-----BEGIN CERTIFICATE-----\n"
                + "\n".join(lines)
                + "\n-----END CERTIFICATE-----\n",
                "collateral": self.collateral_json,
                "verified_at": self.verified_at,
                "endpoint": self.endpoint,
                "gpu_evidence": list(self.gpu_evidence),
            }
        )


def load_evidence(data: bytes) -> EvidenceBundle:
    """An evidence file: a bundle (JSON, :meth:`EvidenceBundle.encode`) or an RA-TLS
    certificate (PEM or DER). Raises ``evidence_malformed``."""
    if len(data) > MAX_EVIDENCE_FILE:
        raise ReceiptError("evidence_malformed", f"larger than {MAX_EVIDENCE_FILE} bytes")
    if data.lstrip().startswith(b"{"):
        try:
            bundle = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ReceiptError("evidence_malformed", "the bundle is not JSON") from exc
        if not isinstance(bundle, dict) or bundle.get("kind") != EVIDENCE_BUNDLE_KIND:
            raise ReceiptError("evidence_malformed", f"not an {EVIDENCE_BUNDLE_KIND} bundle")
        pem, collateral = bundle.get("certificate_pem"), bundle.get("collateral")
        verified_at, endpoint = bundle.get("verified_at"), bundle.get("endpoint")
        gpus = bundle.get("gpu_evidence", [])
        if (
            not isinstance(pem, str)
            or not (collateral is None or isinstance(collateral, str))
            or not (verified_at is None or type(verified_at) is int)
            or not (endpoint is None or isinstance(endpoint, str))
            or not (isinstance(gpus, list) and all(isinstance(g, str) for g in gpus))
        ):
            raise ReceiptError("evidence_malformed", "the bundle's members have wrong types")
        try:
            der = _to_der(pem.encode("ascii"))
        except (AttestationError, UnicodeEncodeError) as exc:
            raise ReceiptError("evidence_malformed", "the bundle's certificate is not PEM") from exc
        return EvidenceBundle(der, collateral, verified_at, endpoint, tuple(gpus))
    try:
        return EvidenceBundle(_to_der(data))
    except AttestationError as exc:
        raise ReceiptError("evidence_malformed", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt that verified, what its evidence proved, and what else was checked."""

    receipt: Receipt
    evidence: VerifiedEvidence
    request_checked: bool
    response_checked: bool


def verify_receipt(
    receipt: bytes | Receipt,
    evidence: EvidenceBundle,
    *,
    policy: Policy,
    collateral: Collateral | None = None,
    insecure_root_ca_der: bytes | None = None,
    request: bytes | None = None,
    response: bytes | None = None,
) -> VerifiedReceipt:
    """Verify a receipt offline; raise :class:`ReceiptError` with the failed step's reason.

    1. the receipt is a canonical version-1 envelope (``receipt_malformed``,
       ``receipt_version_unsupported``);
    2. its signature verifies with its key (``receipt_signature_invalid``);
    3. the certificate is well formed and self-signed by its key, and its evidence verifies
       against ``policy`` with the collateral (``collateral``, else the bundle's) at the
       receipt's time (the :mod:`attestation.verify` reasons, ``collateral_unavailable``);
    4. the receipt names that evidence's quote (``receipt_quote_mismatch``);
    5. its key is the evidence's ``receipt-key`` claim (``receipt_key_mismatch``);
    6. its model is the evidence's model claim (``receipt_model_mismatch``);
    7. given them, the request and the response hash to what was signed
       (``request_mismatch``, ``response_mismatch``).
    """
    parsed = receipt if isinstance(receipt, Receipt) else decode_receipt(receipt)  # 1.
    parsed.verify_signature()  # 2.
    try:  # 3.
        certificate = parse_certificate(evidence.certificate_der)
    except Exception as exc:  # cryptography raises several types for foreign DER
        raise ReceiptError("evidence_malformed", type(exc).__name__) from exc
    _check_self_signed(evidence.certificate_der)
    if collateral is None:
        if evidence.collateral_json is None:
            raise ReceiptError("collateral_unavailable", "no collateral given or kept")
        try:
            collateral = Collateral.from_json(evidence.collateral_json)
        except AttestationError as exc:
            raise ReceiptError("collateral_unavailable", str(exc)) from exc
    try:
        verified = verify_evidence(
            certificate.evidence,
            collateral=collateral,
            peer_spki_der=certificate.spki_der,
            policy=policy,
            now=parsed.time,
            insecure_root_ca_der=insecure_root_ca_der,
        )
    except VerificationError as exc:
        raise ReceiptError(exc.reason, exc.detail) from exc
    parsed.check_quote(certificate.evidence.quote)  # 4.
    claims = certificate.claims
    parsed.check_key(claims.receipt_key)  # 5.
    parsed.check_model(claims.model)  # 6.
    if request is not None:  # 7.
        check_request(parsed, request)
    if response is not None:
        check_response(parsed, response)
    return VerifiedReceipt(parsed, verified, request is not None, response is not None)


def _check_self_signed(der: bytes) -> None:
    """Every byte of the certificate counts: it must verify under its own key."""
    try:
        cert = x509.load_der_x509_certificate(der)
        cert.verify_directly_issued_by(cert)
    except Exception as exc:  # InvalidSignature, or a key or signature it cannot use
        raise ReceiptError("evidence_malformed", "the certificate is not self-signed") from exc
