"""Intel DCAP quotes: parse v4 and v5 TDX quotes, and recognise SGX quotes to refuse them.

Layouts (all integers little-endian), as in Intel's ``sgx_quote_4.h`` / ``sgx_quote_5.h``:

    header (48 bytes)   version u16, attestation key type u16, TEE type u32, QE SVN u16,
                        PCE SVN u16, QE vendor ID 16, user data 20
    v3 / v4 body        SGX enclave report (384 bytes) when TEE type is 0x00,
                        TD report 1.0 (584 bytes) when TEE type is 0x81 (v4 only)
    v5 body             body type u16 (1 SGX, 2 TD 1.0, 3 TD 1.5), body size u32, body
    then                signature data length u32, signature data

Bytes after the declared signature data are ignored (real quotes are often zero-padded), as
dcap-qvl does. Parsing does no cryptography: a parsed quote is not a verified quote.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from attestation.errors import QuoteParseError

__all__ = [
    "HEADER_SIZE",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "BodyType",
    "Quote",
    "QuoteHeader",
    "SgxReport",
    "TdReport",
    "parse_quote",
]

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATTESTATION_KEY_TYPES = frozenset({2, 3})  # ECDSA-256-with-P-256, ECDSA-384-with-P-384
# A quote's signature data holds a few certificates; anything near this is not a quote.
MAX_SIGNATURE_DATA = 1 << 20


class BodyType(IntEnum):
    """The v5 body type; v3 / v4 bodies are mapped onto the same values."""

    SGX = 1
    TD10 = 2
    TD15 = 3


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class TdReport:
    """A TD report (TDREPORT body) as carried in a TDX quote; TD 1.5 adds two fields."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES bit 0 (DEBUG): the host can read and change the TD's state."""
        return bool(self.td_attributes[0] & 0x01)

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)


@dataclass(frozen=True, slots=True)
class SgxReport:
    """The SGX enclave report: parsed only far enough to name what it is."""

    cpu_svn: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True, slots=True)
class Quote:
    header: QuoteHeader
    body_type: BodyType
    body: TdReport | SgxReport
    signature_data_length: int
    signed_length: int  # header + body (+ v5 body descriptor): the bytes the quote signs

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def tee_type(self) -> int:
        return self.header.tee_type

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX and isinstance(self.body, TdReport)

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def td_report(self) -> TdReport:
        """The TD report; raises QuoteParseError for an SGX quote."""
        if not isinstance(self.body, TdReport):
            raise QuoteParseError("not a TDX quote: its body is an SGX enclave report")
        return self.body


def parse_quote(data: bytes) -> Quote:
    """Parse an Intel DCAP quote (v3 SGX, v4 SGX/TDX, v5 SGX/TD 1.0/TD 1.5).

    Raises :class:`QuoteParseError` on anything malformed, and on nothing else.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise QuoteParseError(f"a quote is bytes, not {type(data).__name__}")
    raw = bytes(data)
    header = _parse_header(raw)
    offset = HEADER_SIZE
    if header.version in (3, 4):
        if header.tee_type == TEE_TYPE_SGX:
            body_type, size = BodyType.SGX, SGX_REPORT_SIZE
        elif header.version == 4:
            body_type, size = BodyType.TD10, TD_REPORT10_SIZE
        else:
            raise QuoteParseError("a v3 quote must be an SGX quote (TEE type 0x00)")
    else:
        body_type, size = _parse_v5_descriptor(raw, header.tee_type)
        offset += 6
    body_bytes = _take(raw, offset, size, "quote body")
    body: TdReport | SgxReport = (
        _parse_sgx_report(body_bytes)
        if body_type is BodyType.SGX
        else _parse_td_report(body_bytes, body_type)
    )
    offset += size
    (sig_len,) = struct.unpack("<I", _take(raw, offset, 4, "signature data length"))
    if sig_len > MAX_SIGNATURE_DATA:
        raise QuoteParseError(f"signature data length {sig_len} exceeds {MAX_SIGNATURE_DATA}")
    _take(raw, offset + 4, sig_len, "signature data")
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signature_data_length=sig_len,
        signed_length=offset,
    )


def _take(raw: bytes, offset: int, size: int, what: str) -> bytes:
    end = offset + size
    if end > len(raw):
        raise QuoteParseError(
            f"quote truncated: {what} needs bytes {offset}..{end}, quote has {len(raw)}"
        )
    return raw[offset:end]


def _parse_header(raw: bytes) -> QuoteHeader:
    head = _take(raw, 0, HEADER_SIZE, "header")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", head, 0)
    if version not in (3, 4, 5):
        raise QuoteParseError(f"unsupported quote version {version} (supported: 3, 4, 5)")
    if key_type not in ATTESTATION_KEY_TYPES:
        raise QuoteParseError(f"unsupported attestation key type {key_type}")
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise QuoteParseError(f"unknown TEE type {tee_type:#x}")
    return QuoteHeader(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=head[12:28],
        user_data=head[28:48],
    )


_V5_SIZES = {
    BodyType.SGX: SGX_REPORT_SIZE,
    BodyType.TD10: TD_REPORT10_SIZE,
    BodyType.TD15: TD_REPORT15_SIZE,
}


def _parse_v5_descriptor(raw: bytes, tee_type: int) -> tuple[BodyType, int]:
    body_type_raw, body_size = struct.unpack("<HI", _take(raw, HEADER_SIZE, 6, "v5 body type"))
    try:
        body_type = BodyType(body_type_raw)
    except ValueError:
        raise QuoteParseError(f"unsupported v5 body type {body_type_raw}") from None
    if body_size != _V5_SIZES[body_type]:
        raise QuoteParseError(
            f"v5 body type {body_type.name} must be {_V5_SIZES[body_type]} bytes, not {body_size}"
        )
    if (body_type is BodyType.SGX) != (tee_type == TEE_TYPE_SGX):
        raise QuoteParseError(f"v5 body type {body_type.name} contradicts TEE type {tee_type:#x}")
    return body_type, body_size


# (name, size) in TD report order; TD 1.5 appends tee_tcb_svn2 and mr_service_td.
_TD10_FIELDS: tuple[tuple[str, int], ...] = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rtmr0", 48),
    ("rtmr1", 48),
    ("rtmr2", 48),
    ("rtmr3", 48),
    ("report_data", 64),
)
_TD15_EXTRA: tuple[tuple[str, int], ...] = (("tee_tcb_svn2", 16), ("mr_service_td", 48))


def _parse_td_report(body: bytes, body_type: BodyType) -> TdReport:
    layout = _TD10_FIELDS + (_TD15_EXTRA if body_type is BodyType.TD15 else ())
    fields: dict[str, bytes] = {}
    offset = 0
    for name, size in layout:
        fields[name] = body[offset : offset + size]
        offset += size
    return TdReport(**fields)


def _parse_sgx_report(body: bytes) -> SgxReport:
    isv_prod_id, isv_svn = struct.unpack_from("<HH", body, 256)
    return SgxReport(
        cpu_svn=body[0:16],
        attributes=body[48:64],
        mr_enclave=body[64:96],
        mr_signer=body[128:160],
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        report_data=body[320:384],
    )
