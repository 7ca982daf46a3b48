"""GPU evidence of an RA-TLS certificate, fetched in the TLS layer before any request.

The certificate's claims carry only the digests of the service's GPU evidence
(docs/attestation.md 7.4). When they carry any, or when the policy requires GPUs, the RA-TLS
backends fetch ``GET /v1/attestation/gpus`` on the freshly verified connection itself, before
handing it to httpcore, and verify it against that certificate's claims: a request is written
only on a connection whose GPUs verified too. This module holds the sans-IO part: the request
bytes and an incremental reader of the (``Content-Length``-framed) HTTP/1.1 answer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Final

from attestation.reasons import GpuReason
from enclave.client.errors import AttestationFailed, ClientReason
from enclave.protocol.api import GPUS_PATH

__all__ = ["MAX_GPUS_RESPONSE", "GpusResponse", "gpus_request", "needs_gpu_check"]

#: The largest GPU evidence answer read (16 GPUs of about 10 KB each, in base64 JSON).
MAX_GPUS_RESPONSE: Final = 1 << 20
_MAX_HEAD: Final = 16 * 1024


def needs_gpu_check(claimed: tuple[bytes, ...] | None, required: int) -> bool:
    return bool(claimed) or required > 0


def gpus_request(host: str | None) -> bytes:
    name = (host or "enclave").encode("idna") if host else b"enclave"
    return (
        b"GET " + GPUS_PATH.encode() + b" HTTP/1.1\r\nHost: " + name + b"\r\n"
        b"Accept: application/json\r\nUser-Agent: enclave-client\r\n\r\n"
    )


class GpusResponse:
    """Feed it what the connection reads until ``done``; then ``items(certificate_der)``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._body_start: int | None = None
        self._length = 0
        self._status = 0

    @property
    def done(self) -> bool:
        return self._body_start is not None and len(self._buffer) - self._body_start >= self._length

    def feed(self, data: bytes) -> None:
        if not data:
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "the connection closed early")
        self._buffer += data
        if self._body_start is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_HEAD:
                    raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "response head too long")
                return
            self._parse_head(bytes(self._buffer[:end]))
            self._body_start = end + 4
        if len(self._buffer) - self._body_start > self._length:
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "bytes after the response")

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] != b"HTTP/1.1" or not parts[1].isdigit():
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "not an HTTP/1.1 response")
        self._status = int(parts[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"transfer-encoding":
                raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "chunked GPU evidence")
            if key == b"content-length":
                length = value.strip()
        if length is None or not length.isdigit() or int(length) > MAX_GPUS_RESPONSE:
            raise AttestationFailed(
                GpuReason.EVIDENCE_MALFORMED, f"no Content-Length up to {MAX_GPUS_RESPONSE}"
            )
        self._length = int(length)

    def items(self, certificate_der: bytes) -> object:
        """The ``gpu_evidence`` list, after checking it is the one for this certificate."""
        if self._status != 200 or self._body_start is None:
            raise AttestationFailed(ClientReason.GPU_EVIDENCE_UNAVAILABLE, f"status {self._status}")
        try:
            document = json.loads(bytes(self._buffer[self._body_start :]))
        except ValueError as exc:
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "not JSON") from exc
        if not isinstance(document, dict):
            raise AttestationFailed(GpuReason.EVIDENCE_MALFORMED, "not a JSON object")
        expected = hashlib.sha256(certificate_der).hexdigest()
        if not hmac.compare_digest(str(document.get("certificate_sha256")), expected):
            raise AttestationFailed(
                GpuReason.EVIDENCE_UNBOUND, "the GPU evidence is for another certificate"
            )
        return document.get("gpu_evidence")
