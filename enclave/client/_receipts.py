"""What the local proxy keeps of each answer's receipt (``enclave proxy --receipts DIR``).

For every answer that carries a receipt (docs/attestation.md section 9), the proxy checks it
against what it itself verified and sent: the signature, the key (the endpoint's
``receipt-key`` claim), the quote (the certificate it verified), the model, the SHA-256 of the
exact request body it sent and of the response it received. It then writes, when a folder was
given::

    DIR/receipts/<receipt id>.json          the receipt file (JCS, exactly as signed)
    DIR/evidence/<quote SHA-256>.json       the evidence bundle it verified: the RA-TLS
                                            certificate and the collateral, once per quote

so ``enclave receipt verify DIR/receipts/<id>.json --policy FILE`` works later without the
service. With a folder the proxy asks for the signing service's certificate with each answer
(``x-enclave-receipt-evidence: certificate``): when the receipt names a certificate other than
the one it verified (another replica behind a balancer answered), it verifies that
certificate with the same verifier and policy and keeps it instead. Only hashes, the model
and ids are written: no request or response content. The last
``KEPT_IN_MEMORY`` checks stay in memory for the proxy's page (``/proxy/``).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from attestation.evidence import ModelClaim
from attestation.receipt import (
    CERTIFICATE_HEADER,
    CERTIFICATE_MEMBER,
    HEADER,
    MEMBER,
    SSE_MARKER,
    EvidenceBundle,
    Receipt,
    ReceiptError,
    check_request,
    check_response,
    decode_receipt,
)
from enclave.client._endpoint import VerifiedEndpoint
from enclave.client._verifier import VerifiedCertificate, Verifier, run_sync
from enclave.client.errors import AttestationFailed

__all__ = ["KEPT_IN_MEMORY", "KeptReceipt", "ReceiptKeeper", "ResponseWatcher"]

logger = logging.getLogger(__name__)

KEPT_IN_MEMORY = 50
#: The most of a non-streamed response kept to check its receipt (larger: not checked).
MAX_CHECKED_BODY = 64 << 20


@dataclass(frozen=True, slots=True)
class KeptReceipt:
    """One answer's receipt as the proxy checked it."""

    receipt_id: str | None
    route: str
    time: float
    verified: bool
    reason: str | None
    model: str | None
    path: str | None


class ResponseWatcher:
    """Sees an answer's bytes go by (streamed or not) and finds its receipt."""

    def __init__(self, header: str | None, sse: bool, certificate: str | None = None) -> None:
        self._header = header
        self._sse = sse
        #: The signing service's certificate (DER), when the answer carried it.
        self.certificate: bytes | None = _b64(certificate)
        self._pieces: list[bytes] = []
        self._size = 0
        self._line = b""
        self._found: dict[str, object] | None = None
        self.too_large = False

    @classmethod
    def of(cls, response: httpx.Response) -> ResponseWatcher:
        """A watcher for ``response`` (its receipt header, whether it streams, its
        certificate); then :meth:`feed` it the body as it is read, in order."""
        sse = response.headers.get("content-type", "").startswith("text/event-stream")
        return cls(response.headers.get(HEADER), sse, response.headers.get(CERTIFICATE_HEADER))

    def feed(self, piece: bytes) -> None:
        if not self.too_large:
            self._size += len(piece)
            if self._size > MAX_CHECKED_BODY:
                self.too_large = True
                self._pieces = []
            else:
                self._pieces.append(piece)
        if self._sse and self._found is None:
            lines = (self._line + piece).split(b"\n")
            self._line = lines.pop()
            for line in lines:
                if line.startswith(SSE_MARKER):
                    self._found, certificate = _member(line)
                    self.certificate = self.certificate or _b64(certificate)
            if len(self._line) > MAX_CHECKED_BODY:
                self._line = b""

    @property
    def body(self) -> bytes | None:
        return None if self.too_large else b"".join(self._pieces)

    def receipt(self) -> Receipt:
        if self._header is not None:
            return decode_receipt(self._header)
        if self._found is not None:
            return decode_receipt(self._found)
        raise ReceiptError("receipt_malformed", "the answer carried no receipt")


def _member(line: bytes) -> tuple[dict[str, object] | None, str | None]:
    try:
        event = json.loads(line[len(b"data: ") :])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None
    if not isinstance(event, dict):
        return None, None
    found, certificate = event.get(MEMBER), event.get(CERTIFICATE_MEMBER)
    return (
        found if isinstance(found, dict) else None,
        certificate if isinstance(certificate, str) else None,
    )


def _b64(text: str | None) -> bytes | None:
    """Base64 or base64url, padded or not; None for anything else."""
    if text is None or len(text) > 1 << 20:
        return None
    try:
        return base64.urlsafe_b64decode(
            text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
        )
    except (ValueError, binascii.Error):
        return None


@dataclass(frozen=True, slots=True)
class _Basis:
    """What a receipt is checked against: a certificate this proxy verified."""

    quote_sha256: bytes
    receipt_key: bytes | None
    model: ModelClaim | None
    certificate_der: bytes
    collateral_json: str | None
    verified_at: float
    url: str

    @classmethod
    def of(cls, endpoint: VerifiedEndpoint | VerifiedCertificate) -> _Basis:
        if isinstance(endpoint, VerifiedCertificate):  # an RA-TLS connection's
            return cls(
                endpoint.quote_sha256,
                endpoint.receipt_key_sha256,
                endpoint.evidence.model,
                endpoint.certificate_der,
                endpoint.collateral_json,
                time.time(),
                "",
            )
        return cls(
            endpoint.certificate_quote_sha256,
            endpoint.receipt_key_sha256,
            endpoint.model,
            endpoint.certificate_der,
            endpoint.collateral_json,
            endpoint.verified_at,
            endpoint.url,
        )


class ReceiptKeeper:
    """Checks each answer's receipt and keeps it (in ``directory`` when one is given)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.latest: collections.deque[KeptReceipt] = collections.deque(maxlen=KEPT_IN_MEMORY)
        self.written = 0
        if directory is not None:
            for sub in ("receipts", "evidence"):
                (directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    async def keep(
        self,
        endpoint: VerifiedEndpoint | VerifiedCertificate | None,
        route: str,
        request: bytes,
        watcher: ResponseWatcher,
        verifier: Verifier | None = None,
    ) -> KeptReceipt:
        """Check the answer ``watcher`` saw against ``endpoint`` (what an OHTTP transport
        verified, ``attested_endpoint(response)``, or an RA-TLS connection's certificate,
        ``verified_certificate(response)``; or against the certificate the answer carried,
        verified with ``verifier``) and ``request``; keep it."""
        receipt: Receipt | None = None
        basis = None
        try:
            receipt = watcher.receipt()
            if endpoint is None:
                raise ReceiptError("receipt_key_mismatch", "no verified endpoint")
            basis = _Basis.of(endpoint)
            receipt.verify_signature()
            if receipt.quote_sha256 != basis.quote_sha256 and watcher.certificate is not None:
                basis = await _verified_basis(verifier, watcher.certificate, basis.url)
            receipt.check_quote_sha256(basis.quote_sha256)
            receipt.check_key(basis.receipt_key)
            receipt.check_model(basis.model)
            check_request(receipt, request)
            body = watcher.body
            if body is not None:
                check_response(receipt, body)
            reason = None
        except ReceiptError as exc:
            reason = exc.reason
            logger.warning("receipt of an answer on %s refused: %s", route, reason)
        path = None
        if receipt is not None and basis is not None and self.directory is not None:
            path = self._write(receipt, basis)
        if reason == "receipt_quote_mismatch":  # e.g. another OHTTP replica answered
            logger.warning(
                "the answer's receipt names a certificate other than the one verified (another "
                "replica behind the balancer?): its evidence is not kept"
            )
        kept = KeptReceipt(
            receipt_id=None if receipt is None else receipt.id,
            route=route,
            time=time.time(),
            verified=reason is None,
            reason=reason,
            model=None if receipt is None else receipt.model.name,
            path=path,
        )
        self.latest.appendleft(kept)
        return kept

    def keep_sync(
        self,
        endpoint: VerifiedEndpoint | VerifiedCertificate | None,
        route: str,
        request: bytes,
        watcher: ResponseWatcher,
        verifier: Verifier | None = None,
    ) -> KeptReceipt:
        """:meth:`keep` from synchronous code."""
        return run_sync(self.keep(endpoint, route, request, watcher, verifier))

    def _write(self, receipt: Receipt, basis: _Basis) -> str | None:
        if self.directory is None:
            raise RuntimeError("_write without a receipts directory")
        try:
            # Named by the quote the proxy verified, which a receipt from that certificate names.
            quote = basis.quote_sha256.hex()
            evidence = self.directory / "evidence" / f"{quote}.json"
            named = receipt.quote_sha256 == basis.quote_sha256  # else not this evidence
            if named and not evidence.exists() and basis.certificate_der:
                logger.info("keeping the evidence of certificate quote %s", quote[:16])
                bundle = EvidenceBundle(
                    basis.certificate_der,
                    basis.collateral_json,
                    int(basis.verified_at),
                    basis.url,
                )
                _write_atomic(evidence, bundle.encode())
            target = self.directory / "receipts" / f"{receipt.id}.json"
            _write_atomic(target, receipt.encoded)
        except OSError as exc:
            logger.error("cannot keep a receipt in %s: %s", self.directory, exc.strerror)
            return None
        self.written += 1
        return str(target)


async def _verified_basis(verifier: Verifier | None, certificate: bytes, url: str) -> _Basis:
    """The certificate an answer carried, verified like any connection's (same policy)."""
    if verifier is None:
        raise ReceiptError("receipt_quote_mismatch", "no verifier for the carried certificate")
    try:
        verified = await verifier.verify_certificate(certificate)
    except AttestationFailed as exc:
        raise ReceiptError(exc.reason, exc.detail) from exc
    return _Basis(
        verified.quote_sha256,
        verified.receipt_key_sha256,
        verified.evidence.model,
        verified.certificate_der,
        verified.collateral_json,
        time.time(),
        url,
    )


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
