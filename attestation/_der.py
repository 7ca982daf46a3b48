"""A minimal DER reader: just enough of an X.509 certificate to find its SPKI and extensions.

Used only when cryptography's strict parser refuses a certificate that other stacks accept
(Gramine's RA-TLS certificates carry a NULL parameter after ecdsa-with-SHA256, which DER for
that algorithm forbids). It reads TLV structure, never signatures, and never trusts a length
that runs past its parent.
"""

from __future__ import annotations

from dataclasses import dataclass

from attestation.errors import CertificateError

__all__ = ["RawCertificate", "read_certificate"]

_SEQUENCE = 0x30
_OID = 0x06
_BOOLEAN = 0x01
_OCTET_STRING = 0x04
_EXPLICIT_VERSION = 0xA0
_EXPLICIT_EXTENSIONS = 0xA3


@dataclass(frozen=True, slots=True)
class RawCertificate:
    spki_der: bytes
    extensions: dict[str, tuple[bool, bytes]]  # dotted OID -> (critical, extnValue contents)


@dataclass(frozen=True, slots=True)
class _Tlv:
    tag: int
    start: int  # first byte of the tag
    body: int  # first byte of the contents
    end: int  # one past the last byte of the contents


def _read(data: bytes, offset: int, limit: int) -> _Tlv:
    if offset + 2 > limit:
        raise CertificateError("DER truncated: no room for a tag and length")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise CertificateError("DER high-tag-number form is not used in certificates")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > limit:
            raise CertificateError("DER length is indefinite or too large")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > limit:
        raise CertificateError("DER length runs past its enclosing structure")
    return _Tlv(tag=tag, start=offset, body=pos, end=pos + length)


def _children(data: bytes, parent: _Tlv) -> list[_Tlv]:
    items: list[_Tlv] = []
    offset = parent.body
    while offset < parent.end:
        item = _read(data, offset, parent.end)
        items.append(item)
        offset = item.end
    return items


def _expect(item: _Tlv, tag: int, what: str) -> _Tlv:
    if item.tag != tag:
        raise CertificateError(f"DER: expected {what} (tag {tag:#04x}), found tag {item.tag:#04x}")
    return item


def _oid(data: bytes, item: _Tlv) -> str:
    raw = data[item.body : item.end]
    if not raw:
        raise CertificateError("DER: empty OID")
    arcs: list[int] = []
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if raw[-1] & 0x80:
        raise CertificateError("DER: OID ends inside an arc")
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(arc) for arc in head + arcs[1:])


def read_certificate(der: bytes) -> RawCertificate:
    """Read a certificate's SubjectPublicKeyInfo (exact DER) and its extensions."""
    cert = _expect(_read(der, 0, len(der)), _SEQUENCE, "Certificate")
    if cert.end != len(der):
        raise CertificateError("DER: trailing bytes after the certificate")
    parts = _children(der, cert)
    if len(parts) != 3:
        raise CertificateError("DER: a certificate has tbsCertificate, algorithm, signature")
    tbs = _children(der, _expect(parts[0], _SEQUENCE, "tbsCertificate"))
    if tbs and tbs[0].tag == _EXPLICIT_VERSION:
        tbs = tbs[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(tbs) < 6:
        raise CertificateError("DER: tbsCertificate is missing fields")
    spki = _expect(tbs[5], _SEQUENCE, "subjectPublicKeyInfo")
    extensions: dict[str, tuple[bool, bytes]] = {}
    for item in tbs[6:]:
        if item.tag != _EXPLICIT_EXTENSIONS:
            continue
        wrapped = _children(der, item)
        if len(wrapped) != 1:
            raise CertificateError("DER: the extensions field must hold one SEQUENCE")
        for ext in _children(der, _expect(wrapped[0], _SEQUENCE, "Extensions")):
            oid, critical, value = _extension(der, _expect(ext, _SEQUENCE, "Extension"))
            if oid in extensions:
                raise CertificateError(f"DER: extension {oid} appears twice")
            extensions[oid] = (critical, value)
    return RawCertificate(spki_der=der[spki.start : spki.end], extensions=extensions)


def _extension(der: bytes, ext: _Tlv) -> tuple[str, bool, bytes]:
    fields = _children(der, ext)
    if len(fields) not in (2, 3):
        raise CertificateError("DER: an Extension has an OID, optional critical, and a value")
    oid = _oid(der, _expect(fields[0], _OID, "extnID"))
    critical = False
    if len(fields) == 3:
        flag = _expect(fields[1], _BOOLEAN, "critical")
        critical = der[flag.body : flag.end] != b"\x00"
    value = _expect(fields[-1], _OCTET_STRING, "extnValue")
    return oid, critical, der[value.body : value.end]
