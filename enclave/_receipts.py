"""The service's receipts: one signed per answer of an inference route (docs/attestation.md 9).

:class:`ReceiptIssuer` holds the receipt key (:class:`attestation.receipt.ReceiptSigner`, made
in memory at start, never written) and knows the current RA-TLS certificate's quote; the relay
(:mod:`enclave.routes._relay`) asks it for a receipt when an answer ends. Streamed answers get
the receipt in their own event just before ``data: [DONE]``, sent in the same body message as
``[DONE]`` (so in the final OHTTP chunk); non-streamed answers get it as the ``enclave-receipt``
header and the ``enclave_receipt`` member of the JSON body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from attestation.receipt import MEMBER, Receipt, ReceiptSigner, ResponseHash, request_digest
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
        quote_sha256: Callable[[], bytes | None],
        *,
        signer: ReceiptSigner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer or ReceiptSigner()
        self._quote_sha256 = quote_sha256
        self._clock = clock

    @property
    def claim(self) -> bytes:
        """The ``receipt-key`` claim: SHA-256 of the raw public key."""
        return self.signer.claim

    def for_request(self, route: str, body: bytes, status: ModelStatus) -> RequestReceipt | None:
        """What a receipt for this request needs, taken when the request arrives; None while
        no model is claimed (the route refuses such a request anyway)."""
        model = model_claim(status)
        if model is None:
            return None
        return RequestReceipt(self, route, request_digest(body), status)

    def _sign(
        self, request: RequestReceipt, response_sha256: bytes, kind: ResponseHash
    ) -> Receipt | None:
        quote = self._quote_sha256()
        model = model_claim(request.status)
        if quote is None or model is None:
            return None
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

    def sign(self, response_sha256: bytes, kind: ResponseHash) -> Receipt | None:
        return self.issuer._sign(self, response_sha256, kind)


def receipt_event(receipt: Receipt, first_event: dict[str, object] | None) -> bytes:
    """The SSE event carrying ``receipt``: its first member is the receipt (how a verifier
    finds it), then ``choices: []`` and the stream's id, object, created and model."""
    extra: dict[str, object] = {"choices": []}
    if first_event is not None:
        extra.update({name: first_event[name] for name in _COPIED if name in first_event})
    rest = json.dumps(extra, separators=(",", ":"), ensure_ascii=False).encode()[1:]
    return b'data: {"' + MEMBER.encode() + b'":' + receipt.encoded + b"," + rest + b"\n\n"
