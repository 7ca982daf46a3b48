"""The service's receipts: one signed per answer of an inference route (docs/attestation.md 9).

:class:`ReceiptIssuer` holds the receipt key (:class:`attestation.receipt.ReceiptSigner`, made
in memory at start, never written) and knows the current RA-TLS certificate's quote; the relay
(:mod:`enclave.routes._relay`) asks it for a receipt when an answer ends. Streamed answers get
the receipt in their own event just before ``data: [DONE]``, sent in the same body message as
``[DONE]`` (so in the final OHTTP chunk); non-streamed answers get it as the ``enclave-receipt``
header and the ``enclave_receipt`` member of the JSON body.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from attestation.receipt import (
    CERTIFICATE_MEMBER,
    MEMBER,
    Receipt,
    ReceiptSigner,
    ResponseHash,
    request_digest,
)
from enclave.tls import model_claim
from model_manager.status import ModelStatus

__all__ = ["ReceiptIssuer", "RequestReceipt", "receipt_event"]

#: The members a receipt event copies from the stream's first event, so that an
#: OpenAI-compatible client sees an ordinary chunk (with no choices, like a usage chunk).
_COPIED = ("id", "object", "created", "model")


class ReceiptIssuer:
    """Signs receipts with the service's receipt key, naming the current certificate's quote."""

    def __init__(
        self,
        current: Callable[[], tuple[bytes, bytes] | None],
        *,
        signer: ReceiptSigner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``current``: the current certificate's (quote SHA-256, certificate DER)."""
        self.signer = signer or ReceiptSigner()
        self._current = current
        self._clock = clock

    @property
    def claim(self) -> bytes:
        """The ``receipt-key`` claim: SHA-256 of the raw public key."""
        return self.signer.claim

    def for_request(
        self, route: str, body: bytes, status: ModelStatus, *, with_certificate: bool = False
    ) -> RequestReceipt | None:
        """What a receipt for this request needs, taken when the request arrives; None while
        no model is claimed (the route refuses such a request anyway). ``with_certificate``:
        the answer also carries the certificate the receipt names."""
        model = model_claim(status)
        if model is None:
            return None
        return RequestReceipt(self, route, request_digest(body), status, with_certificate)

    def _sign(
        self, request: RequestReceipt, response_sha256: bytes, kind: ResponseHash
    ) -> Receipt | None:
        current = self._current()
        model = model_claim(request.status)
        if current is None or model is None:
            return None
        quote, certificate = current
        if request.with_certificate:
            request.certificate = certificate
        return self.signer.sign(
            route=request.route,
            request_sha256=request.request_sha256,
            response_sha256=response_sha256,
            response_hash=kind,
            model=model,
            generation=request.status.generation,
            time=int(self._clock()),
            quote_sha256=quote,
        )


@dataclass(slots=True)
class RequestReceipt:
    """One request's receipt in the making."""

    issuer: ReceiptIssuer
    route: str
    request_sha256: bytes
    status: ModelStatus
    with_certificate: bool = False
    #: The certificate the signed receipt names, when asked for (after :meth:`sign`).
    certificate: bytes | None = None

    def sign(self, response_sha256: bytes, kind: ResponseHash) -> Receipt | None:
        return self.issuer._sign(self, response_sha256, kind)


def receipt_event(
    receipt: Receipt, first_event: dict[str, object] | None, certificate: bytes | None = None
) -> bytes:
    """The SSE event carrying ``receipt``: its first member is the receipt (how a verifier
    finds it), then ``choices: []`` and the stream's id, object, created and model, and the
    certificate (base64 DER) when asked for."""
    extra: dict[str, object] = {"choices": []}
    if certificate is not None:
        extra[CERTIFICATE_MEMBER] = base64.b64encode(certificate).decode("ascii")
    if first_event is not None:
        extra.update({name: first_event[name] for name in _COPIED if name in first_event})
    rest = json.dumps(extra, separators=(",", ":"), ensure_ascii=False).encode()[1:]
    return b'data: {"' + MEMBER.encode() + b'":' + receipt.encoded + b"," + rest + b"\n\n"
