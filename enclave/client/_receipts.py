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
service. Only hashes, the model and ids are written: no request or response content. The last
``KEPT_IN_MEMORY`` checks stay in memory for the proxy's page (``/proxy/``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from attestation.receipt import (
    SSE_MARKER,
    EvidenceBundle,
    Receipt,
    ReceiptError,
    check_request,
    check_response,
    decode_receipt,
)
from enclave.client._endpoint import VerifiedEndpoint

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

    def __init__(self, header: str | None, sse: bool) -> None:
        self._header = header
        self._sse = sse
        self._pieces: list[bytes] = []
        self._size = 0
        self._line = b""
        self._found: dict[str, object] | None = None
        self.too_large = False

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
                    self._found = _member(line)
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


def _member(line: bytes) -> dict[str, object] | None:
    try:
        event = json.loads(line[len(b"data: ") :])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    found = event.get("enclave_receipt") if isinstance(event, dict) else None
    return found if isinstance(found, dict) else None


class ReceiptKeeper:
    """Checks each answer's receipt and keeps it (in ``directory`` when one is given)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.latest: collections.deque[KeptReceipt] = collections.deque(maxlen=KEPT_IN_MEMORY)
        self.written = 0
        if directory is not None:
            for sub in ("receipts", "evidence"):
                (directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    def keep(
        self,
        endpoint: VerifiedEndpoint | None,
        route: str,
        request: bytes,
        watcher: ResponseWatcher,
    ) -> KeptReceipt:
        """Check the answer ``watcher`` saw against ``endpoint`` and ``request``; keep it."""
        receipt: Receipt | None = None
        try:
            receipt = watcher.receipt()
            if endpoint is None:
                raise ReceiptError("receipt_key_mismatch", "no verified endpoint")
            receipt.verify_signature()
            receipt.check_quote_sha256(endpoint.certificate_quote_sha256)
            receipt.check_key(endpoint.receipt_key_sha256)
            receipt.check_model(endpoint.model)
            check_request(receipt, request)
            body = watcher.body
            if body is not None:
                check_response(receipt, body)
            reason = None
        except ReceiptError as exc:
            reason = exc.reason
            logger.warning("receipt of an answer on %s refused: %s", route, reason)
        path = None
        if receipt is not None and endpoint is not None and self.directory is not None:
            path = self._write(receipt, endpoint)
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

    def _write(self, receipt: Receipt, endpoint: VerifiedEndpoint) -> str | None:
        assert self.directory is not None
        try:
            evidence = self.directory / "evidence" / f"{receipt.quote_sha256.hex()}.json"
            if not evidence.exists() and endpoint.certificate_der:
                quote = hashlib.sha256(endpoint.certificate_der).hexdigest()
                logger.info("keeping the evidence of certificate %s", quote[:16])
                bundle = EvidenceBundle(
                    endpoint.certificate_der,
                    endpoint.collateral_json,
                    int(endpoint.verified_at),
                    endpoint.url,
                )
                _write_atomic(evidence, bundle.encode())
            target = self.directory / "receipts" / f"{receipt.id}.json"
            _write_atomic(target, receipt.encoded)
        except OSError as exc:
            logger.error("cannot keep a receipt in %s: %s", self.directory, exc.strerror)
            return None
        self.written += 1
        return str(target)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
