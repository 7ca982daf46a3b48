"""NVIDIA device certificate chains: parse, check to the pinned root, read the FWID.

The chain is as NVML returns it (PEM, leaf first, root last)::

    GH100 A01 GSP FMC LF      leaf: signs the attestation report; carries the FWID
    GH100 A01 GSP BROM        per-device CA
    NVIDIA GH100 Provisioner ICA 1
    NVIDIA GH100 Identity
    NVIDIA Device Identity CA self-signed root, pinned below

The FWID extension differs between architectures (TCG DICE Attestation Architecture 1.1,
section 6.1.1): Hopper uses 2.23.133.5.4.1 (DiceTcbInfo) in NVIDIA's legacy encoding, whose
last 48 bytes are the SHA-384 FWID; Blackwell uses 2.23.133.5.4.1.1 holding a DER
DiceTcbInfo whose fwids [6] IMPLICIT list's first entry is {sha384, digest}. Both
facts are as NVIDIA's verifier (cc_admin_utils.extract_fwid) reads them.

This is written over cryptography rather than with nv-local-gpu-verifier because that
package pins cryptography==43.0.1 and nvidia-ml-py==12.550.52 (this project needs
cryptography >= 50) and verifies only reports it fetches itself or reads from its sample
files, with RIMs and OCSP fetched online (docs/attestation.md, "GPU evidence").
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from attestation._der import _children, _read
from attestation.errors import CertificateError, GpuChainError
from attestation.reasons import GpuReason

__all__ = [
    "ARCHITECTURES",
    "FWID_OIDS",
    "NVIDIA_DEVICE_ROOT_PEM",
    "NVIDIA_DEVICE_ROOT_SHA256",
    "Architecture",
    "GpuChainError",
    "architecture_of",
    "certificate_fwid",
    "check_chain",
    "check_links",
    "check_root",
    "parse_chain",
]

Architecture = Literal["hopper", "blackwell"]
ARCHITECTURES: Final[frozenset[str]] = frozenset({"hopper", "blackwell"})
FWID_OIDS: Final[dict[str, str]] = {"hopper": "2.23.133.5.4.1", "blackwell": "2.23.133.5.4.1.1"}
_SHA384_OID: Final = "2.16.840.1.101.3.4.2.2"
MAX_CHAIN_CERTS: Final = 8
MAX_CHAIN_BYTES: Final = 64 * 1024

# "NVIDIA Device Identity CA": the root of every NVIDIA GPU's device identity chain. The same
# certificate ships as verifier/certs/verifier_device_root.pem in NVIDIA's nv-local-gpu-verifier
# 2.7.3 and as nvidia_device_root.pem in tests/vectors/gpu (confidential-containers/trustee).
NVIDIA_DEVICE_ROOT_PEM: Final = b"""-----BEGIN CERTIFICATE-----
MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw
IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE
SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM
GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG
ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX
gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB
2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY
MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3
TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+
EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=
-----END CERTIFICATE-----
"""
NVIDIA_DEVICE_ROOT_SHA256: Final = bytes.fromhex(
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"
)


def parse_chain(data: bytes | str) -> tuple[x509.Certificate, ...]:
    """PEM certificates, leaf first; raises GpuChainError('gpu_chain_malformed')."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_CHAIN_BYTES:
        raise GpuChainError(GpuReason.CHAIN_MALFORMED, f"chain larger than {MAX_CHAIN_BYTES} bytes")
    try:
        certs = tuple(x509.load_pem_x509_certificates(raw))
    except ValueError as exc:
        raise GpuChainError(GpuReason.CHAIN_MALFORMED, "not PEM certificates") from exc
    if len(certs) > MAX_CHAIN_CERTS:
        raise GpuChainError(GpuReason.CHAIN_MALFORMED, f"more than {MAX_CHAIN_CERTS} certificates")
    return certs


def _root() -> x509.Certificate:
    return x509.load_pem_x509_certificate(NVIDIA_DEVICE_ROOT_PEM)


def check_chain(
    certs: tuple[x509.Certificate, ...],
    *,
    now: datetime.datetime,
    root_der: bytes | None = None,
) -> x509.Certificate:
    """Check leaf -> ... -> root against the pinned root (or root_der); return the leaf.

    Each certificate must be signed by the next one (ECDSA P-384 / SHA-384 throughout, as
    NVIDIA issues them), name it as its issuer, and be valid at now; every issuer must be a
    CA; the last certificate must be the pinned root, byte for byte.
    """
    check_root(certs, root_der=root_der)
    check_links(certs, now=now)
    return certs[0]


def check_root(certs: tuple[x509.Certificate, ...], *, root_der: bytes | None = None) -> None:
    """Step 3: a leaf and a root, and the root is the pinned one (or ``root_der``)."""
    if len(certs) < 2:
        raise GpuChainError(GpuReason.CHAIN_INCOMPLETE, "need at least the leaf and the root")
    pinned = root_der if root_der is not None else _root().public_bytes(serialization.Encoding.DER)
    last = certs[-1].public_bytes(serialization.Encoding.DER)
    if root_der is None and hashlib.sha256(pinned).digest() != NVIDIA_DEVICE_ROOT_SHA256:
        raise GpuChainError(GpuReason.ROOT_UNTRUSTED, "the pinned root does not match its digest")
    if last != pinned:
        raise GpuChainError(GpuReason.ROOT_UNTRUSTED, "the chain does not end in the pinned root")


def check_links(certs: tuple[x509.Certificate, ...], *, now: datetime.datetime) -> None:
    """Step 4: each certificate issued and signed by the next, issuers CAs, all valid now."""
    for position, (cert, issuer) in enumerate(zip(certs, certs[1:] + certs[-1:], strict=True)):
        _check_link(cert, issuer, position)
        _check_validity(cert, now, position)


def _check_link(cert: x509.Certificate, issuer: x509.Certificate, position: int) -> None:
    if cert.issuer != issuer.subject:
        raise GpuChainError(
            GpuReason.CHAIN_INVALID, f"certificate {position} is not issued by the next one"
        )
    _check_issuer_is_ca(issuer, position)
    _check_signed_by(cert, issuer, position)


def _check_issuer_is_ca(issuer: x509.Certificate, position: int) -> None:
    """A certificate that is not a CA (no basicConstraints cA) may not issue: a leaf's key
    signing another "leaf" would otherwise extend the chain."""
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise GpuChainError(
            GpuReason.CHAIN_INVALID, f"the issuer of certificate {position} is not a CA"
        )


def _check_signed_by(cert: x509.Certificate, issuer: x509.Certificate, position: int) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise GpuChainError(
            GpuReason.CHAIN_INVALID, f"the signature on certificate {position} does not verify"
        ) from exc


def _check_validity(cert: x509.Certificate, now: datetime.datetime, position: int) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise GpuChainError(
            GpuReason.CERT_EXPIRED, f"certificate {position} is not valid at {now.isoformat()}"
        )


def architecture_of(leaf: x509.Certificate) -> Architecture | None:
    """The architecture whose FWID extension the leaf carries (Blackwell's OID wins)."""
    oids = {ext.oid.dotted_string for ext in leaf.extensions}
    if FWID_OIDS["blackwell"] in oids:
        return "blackwell"
    if FWID_OIDS["hopper"] in oids:
        return "hopper"
    return None


def certificate_fwid(leaf: x509.Certificate, architecture: Architecture) -> bytes:
    """The leaf's FWID for architecture; raises GpuChainError('gpu_fwid_missing')."""
    oid = x509.ObjectIdentifier(FWID_OIDS[architecture])
    try:
        value = leaf.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound as exc:
        raise GpuChainError(
            GpuReason.FWID_MISSING, f"the signing certificate has no {architecture} FWID extension"
        ) from exc
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    if architecture == "hopper":
        if len(raw) < 48:
            raise GpuChainError(
                GpuReason.FWID_MISSING, "the FWID extension is shorter than 48 bytes"
            )
        return raw[-48:]
    return _dice_first_fwid(raw)


def _dice_first_fwid(der: bytes) -> bytes:
    """fwids[0].digest of a DER DiceTcbInfo; it must be a SHA-384 digest."""
    try:
        outer = _read(der, 0, len(der))
        if outer.tag != 0x30 or outer.end != len(der):
            raise CertificateError("DiceTcbInfo is not one SEQUENCE")
        fwids = [item for item in _children(der, outer) if item.tag == 0xA6]
        if len(fwids) != 1:
            raise CertificateError("DiceTcbInfo needs exactly one fwids [6] field")
        entries = _children(der, fwids[0])
        if not entries or entries[0].tag != 0x30:
            raise CertificateError("the fwids list is empty")
        fields = _children(der, entries[0])
        if len(fields) != 2 or fields[0].tag != 0x06 or fields[1].tag != 0x04:
            raise CertificateError("fwids[0] is not {hashAlg OID, digest OCTET STRING}")
        oid = x509.ObjectIdentifier(_decode_oid(der[fields[0].body : fields[0].end]))
        digest = der[fields[1].body : fields[1].end]
    except CertificateError as exc:
        raise GpuChainError(GpuReason.FWID_MISSING, f"unreadable DiceTcbInfo: {exc}") from exc
    if oid.dotted_string != _SHA384_OID or len(digest) != 48:
        raise GpuChainError(GpuReason.FWID_MISSING, "fwids[0] is not a SHA-384 digest")
    return digest


def _decode_oid(raw: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise CertificateError("empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])
