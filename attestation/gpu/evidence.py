"""GPU evidence as this service carries it, its digest, and the GPU nonce (sans-IO).

One GPU's evidence is a deterministic CBOR map (RFC 8949 core deterministic encoding)::

    gpu-evidence = {
        "arch": "hopper" / "blackwell",   ; from NVML (nvmlDeviceGetArchitecture)
        "report": bstr,                   ; NVML's attestation report: SPDM request || response
        "certs": [+ bstr],                ; the device certificate chain, DER, leaf first
        "cc-mode": "on" / "off" / "devtools",  ; NVML's CC settings (ccFeature, devToolsMode)
        "ready": bool,                    ; NVML's CC GPUs-ready state
    }
    gpu-evidence-digest = SHA-256(gpu-evidence)

The TDX claims buffer carries ``"gpus": [* gpu-evidence-digest]`` (one per GPU, in NVML
index order), so the quote covers every byte of every GPU's evidence, including the NVML
state that the SPDM report itself does not sign. Each GPU report is requested with::

    gpu-nonce = SHA-256( "enclave-gpu-nonce-v1"
                         || lp(pubkey-hash) || lp(ohttp-keys) || lp(nonce) )

where ``lp(x)`` is ``x`` preceded by its length as two big-endian bytes, ``pubkey-hash`` is
the exact CBOR byte string of the claim of that name (``[alg-id, hash]``), ``ohttp-keys`` the
32-byte claim (empty when absent) and ``nonce`` the client's challenge (empty when absent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, cast

import cbor2

from attestation._cbor import loads_exact
from attestation.errors import EvidenceError
from attestation.evidence import PubkeyHash
from attestation.gpu._certs import ARCHITECTURES, Architecture

__all__ = [
    "CC_MODES",
    "GPU_NONCE_LABEL",
    "MAX_GPUS",
    "CcMode",
    "GpuEvidence",
    "decode_gpu_evidence",
    "decode_gpu_evidence_list",
    "encode_gpu_evidence_list",
    "gpu_nonce",
]

CcMode = Literal["on", "off", "devtools"]
CC_MODES: Final[frozenset[str]] = frozenset({"on", "off", "devtools"})
GPU_NONCE_LABEL: Final = b"enclave-gpu-nonce-v1"
MAX_GPUS: Final = 16
MAX_GPU_EVIDENCE_SIZE: Final = 128 * 1024
_KEYS: Final = frozenset({"arch", "report", "certs", "cc-mode", "ready"})


@dataclass(frozen=True, slots=True)
class GpuEvidence:
    architecture: Architecture
    report: bytes
    cert_chain: tuple[bytes, ...]  # DER, leaf first
    cc_mode: CcMode
    ready: bool

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise EvidenceError(f"unknown GPU architecture {self.architecture!r}")
        if self.cc_mode not in CC_MODES:
            raise EvidenceError(f"unknown CC mode {self.cc_mode!r}")

    def encode(self) -> bytes:
        entries: dict[str, object] = {
            "arch": self.architecture,
            "certs": list(self.cert_chain),
            "ready": self.ready,
            "report": self.report,
            "cc-mode": self.cc_mode,
        }
        ordered = dict(sorted(entries.items(), key=lambda item: cbor2.dumps(item[0])))
        encoded: bytes = cbor2.dumps(ordered)
        return encoded

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


def decode_gpu_evidence(data: bytes) -> GpuEvidence:
    """Decode one GPU's evidence; raises :class:`EvidenceError` when malformed."""
    if len(data) > MAX_GPU_EVIDENCE_SIZE:
        raise EvidenceError(f"GPU evidence larger than {MAX_GPU_EVIDENCE_SIZE} bytes")
    decoded = loads_exact(data, "GPU evidence")
    if not isinstance(decoded, dict) or set(decoded) != _KEYS:
        raise EvidenceError(f"GPU evidence must be a map with exactly {sorted(_KEYS)}")
    arch, report, certs = decoded["arch"], decoded["report"], decoded["certs"]
    cc_mode, ready = decoded["cc-mode"], decoded["ready"]
    if arch not in ARCHITECTURES or cc_mode not in CC_MODES or not isinstance(ready, bool):
        raise EvidenceError("GPU evidence has an unknown arch or cc-mode, or a non-bool ready")
    if not isinstance(report, bytes):
        raise EvidenceError("GPU evidence 'report' must be a byte string")
    if not (isinstance(certs, list) and certs and all(isinstance(c, bytes) for c in certs)):
        raise EvidenceError("GPU evidence 'certs' must be a non-empty array of byte strings")
    evidence = GpuEvidence(
        architecture=cast(Architecture, arch),
        report=report,
        cert_chain=tuple(certs),
        cc_mode=cast(CcMode, cc_mode),
        ready=ready,
    )
    if evidence.encode() != data:
        raise EvidenceError("GPU evidence is not in deterministic CBOR encoding")
    return evidence


def encode_gpu_evidence_list(items: Sequence[GpuEvidence]) -> bytes:
    """The transport form: a CBOR array of the encoded items (byte strings)."""
    encoded: bytes = cbor2.dumps([item.encode() for item in items])
    return encoded


def decode_gpu_evidence_list(data: bytes) -> tuple[GpuEvidence, ...]:
    if len(data) > MAX_GPUS * MAX_GPU_EVIDENCE_SIZE:
        raise EvidenceError("GPU evidence list too large")
    decoded = loads_exact(data, "GPU evidence list")
    if not isinstance(decoded, list) or len(decoded) > MAX_GPUS:
        raise EvidenceError(f"GPU evidence list must be an array of at most {MAX_GPUS} items")
    if not all(isinstance(item, bytes) for item in decoded):
        raise EvidenceError("GPU evidence list items must be byte strings")
    return tuple(decode_gpu_evidence(item) for item in decoded)


def gpu_nonce(pubkey_hash: PubkeyHash, ohttp_keys: bytes | None, nonce: bytes | None) -> bytes:
    """The 32-byte nonce every GPU report must be requested with (see the module docstring)."""
    hasher = hashlib.sha256(GPU_NONCE_LABEL)
    for part in (pubkey_hash.encode(), ohttp_keys or b"", nonce or b""):
        if len(part) > 0xFFFF:
            raise EvidenceError("a GPU nonce input is longer than 65535 bytes")
        hasher.update(len(part).to_bytes(2, "big") + part)
    return hasher.digest()
