"""PE/COFF images (kernels with an EFI stub, UKIs): sections and the Authenticode digest.

The Authenticode digest (Microsoft's "Windows Authenticode Portable Executable Signature
Format", section "Calculating the PE Image Hash") is what UEFI firmware measures for an EFI
application it loads (EV_EFI_BOOT_SERVICES_APPLICATION): the headers up to SizeOfHeaders
without the CheckSum field and the Certificate Table directory entry, then every section's raw
data in file order, then any data after the last section that is not the certificate table.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from attestation.measure._tdvf import MeasureError

__all__ = ["PeImage", "PeSection", "authenticode_digest", "parse_pe"]

_PE32, _PE32_PLUS = 0x10B, 0x20B
_SECURITY_DIRECTORY = 4
_SECTION_HEADER = 40


@dataclass(frozen=True, slots=True)
class PeSection:
    name: str
    virtual_size: int
    virtual_address: int
    raw_size: int
    raw_offset: int


@dataclass(frozen=True, slots=True)
class PeImage:
    data: bytes
    checksum_offset: int
    security_entry_offset: int
    size_of_headers: int
    certificate_table: tuple[int, int]  # (file offset, size); (0, 0) when unsigned
    sections: tuple[PeSection, ...]

    def section(self, name: str) -> bytes | None:
        """The bytes of section ``name`` as loaded (VirtualSize bytes, zero-filled past the raw
        data), or None."""
        for item in self.sections:
            if item.name == name:
                raw = self.data[item.raw_offset : item.raw_offset + item.raw_size]
                return (raw + bytes(max(0, item.virtual_size - len(raw))))[: item.virtual_size]
        return None


def _u16(data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise MeasureError("truncated PE image")
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


def _u32(data: bytes, offset: int) -> int:
    if offset + 4 > len(data):
        raise MeasureError("truncated PE image")
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def parse_pe(data: bytes) -> PeImage:
    """Parse the headers of a PE/COFF image; ``MeasureError`` if it is not one."""
    if data[:2] != b"MZ":
        raise MeasureError("not a PE image (no MZ header)")
    pe = _u32(data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0":
        raise MeasureError("not a PE image (no PE signature)")
    coff = pe + 4
    count, optional_size = _u16(data, coff + 2), _u16(data, coff + 16)
    optional = coff + 20
    magic = _u16(data, optional)
    if magic not in (_PE32, _PE32_PLUS):
        raise MeasureError(f"unknown PE optional header magic {magic:#x}")
    directories = optional + (112 if magic == _PE32_PLUS else 96)
    directory_count = _u32(data, directories - 4)
    if directory_count <= _SECURITY_DIRECTORY:
        security_entry = 0
        certificate = (0, 0)
    else:
        security_entry = directories + 8 * _SECURITY_DIRECTORY
        certificate = (_u32(data, security_entry), _u32(data, security_entry + 4))
    size_of_headers = _u32(data, optional + 60)
    table = optional + optional_size
    if table + count * _SECTION_HEADER > min(len(data), size_of_headers or len(data)):
        raise MeasureError("PE section table out of range")
    sections = []
    for index in range(count):
        at = table + index * _SECTION_HEADER
        name = data[at : at + 8].rstrip(b"\0").decode("ascii", "replace")
        virtual_size, virtual_address, raw_size, raw_offset = struct.unpack_from(
            "<IIII", data, at + 8
        )
        if raw_size and raw_offset + raw_size > len(data):
            raise MeasureError(f"PE section {name!r} extends past the image")
        sections.append(PeSection(name, virtual_size, virtual_address, raw_size, raw_offset))
    if size_of_headers > len(data) or (security_entry and security_entry + 8 > size_of_headers):
        raise MeasureError("PE headers out of range")
    return PeImage(
        data, optional + 64, security_entry, size_of_headers, certificate, tuple(sections)
    )


def authenticode_digest(data: bytes, algorithm: str = "sha384", *, pad_to: int = 1) -> bytes:
    """The Authenticode digest of the PE image ``data`` with hash ``algorithm``. ``pad_to``
    appends zero bytes up to a multiple of it (QEMU's direct kernel boot path: 8)."""
    image = parse_pe(data)
    digest = hashlib.new(algorithm)
    security = image.security_entry_offset
    digest.update(data[: image.checksum_offset])
    if security:
        digest.update(data[image.checksum_offset + 4 : security])
        digest.update(data[security + 8 : image.size_of_headers])
    else:
        digest.update(data[image.checksum_offset + 4 : image.size_of_headers])
    hashed = image.size_of_headers
    for section in sorted(image.sections, key=lambda s: s.raw_offset):
        if section.raw_size:
            digest.update(data[section.raw_offset : section.raw_offset + section.raw_size])
            hashed += section.raw_size
    cert_offset, cert_size = image.certificate_table
    if len(data) > hashed:
        end = len(data) - cert_size if cert_offset and cert_size else len(data)
        if end > hashed:
            digest.update(data[hashed:end])
    if len(data) % pad_to:
        digest.update(bytes(pad_to - len(data) % pad_to))
    return digest.digest()
