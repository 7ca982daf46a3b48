"""Byte layout of an Intel TDX quote, version 4, with ECDSA P-256 signature data.

Layout (Intel TDX DCAP Quoting Library API, appendix "Quote format")::

    header             48   version 4, attestation key type 2, TEE type 0x81, QE vendor ID
    TD report body    584   TD 1.0 report (TEE TCB SVN, MRSEAM, ..., RTMRs, report_data)
    signature length    4
    signature data:
      quote signature  64   ECDSA P-256 r || s over header || body, by the attestation key
      attestation key  64   raw x || y
      certification data, type 6 (QE report certification data):
        QE report     384   SGX report of the quoting enclave; its report_data is
                            SHA-256(attestation key || QE auth data) || 0^32
        QE report sig  64   ECDSA P-256 r || s over the QE report, by the PCK key
        QE auth data        u16 length + bytes
        certification data, type 5: the PEM PCK chain (leaf, Platform CA, root)

All integers little-endian.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enclave_dev.tee._measurements import SimulatedMeasurements

__all__ = [
    "HEADER_LEN",
    "INTEL_QE_VENDOR_ID",
    "TD_REPORT10_LEN",
    "QuotingEnclave",
    "TdxModule",
    "build_quote",
    "raw_public_key",
    "raw_signature",
]

QUOTE_VERSION = 4
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
HEADER_LEN = 48
TD_REPORT10_LEN = 584
QE_REPORT_LEN = 384
#: Intel's quoting enclave uses 32 bytes of QE authentication data: 0x00, 0x01, ..., 0x1f.
QE_AUTH_DATA = bytes(range(32))

_HEADER = struct.Struct("<HHIHH16s20s")
_QE_REPORT = struct.Struct("<16sI28s16s32s32s32s96sHH60s64s")


@dataclass(frozen=True)
class TdxModule:
    """The TDX module (SEAM) the simulated TD runs on."""

    tee_tcb_svn: bytes  # 16 bytes; [0] module SVN, [1] module major version
    mr_seam: bytes  # 48 bytes
    mr_signer_seam: bytes = bytes(48)  # zero for Intel-signed modules
    seam_attributes: bytes = bytes(8)


@dataclass(frozen=True)
class QuotingEnclave:
    """The simulated TD quoting enclave's identity, as its SGX report states it."""

    cpu_svn: bytes  # 16
    attributes: bytes  # 16
    mr_enclave: bytes  # 32
    mr_signer: bytes  # 32
    isv_prod_id: int
    isv_svn: int
    header_user_data: bytes  # 20: QE ID prefix, as Intel's QE writes into the header
    misc_select: int = 0


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 / SHA-256 signature as 64 raw bytes r || s (the quote's encoding)."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePublicKey) -> bytes:
    """A P-256 public key as 64 raw bytes x || y (uncompressed point without 0x04)."""
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def _header(qe: QuotingEnclave) -> bytes:
    return _HEADER.pack(
        QUOTE_VERSION,
        ATTESTATION_KEY_TYPE_ECDSA_P256,
        TEE_TYPE_TDX,
        0,  # reserved in TDX quotes (QE SVN in SGX ones)
        0,  # reserved in TDX quotes (PCE SVN in SGX ones)
        INTEL_QE_VENDOR_ID,
        qe.header_user_data,
    )


def _td_report10(
    measurements: SimulatedMeasurements, module: TdxModule, report_data: bytes
) -> bytes:
    body = b"".join(
        (
            module.tee_tcb_svn,
            module.mr_seam,
            module.mr_signer_seam,
            module.seam_attributes,
            measurements.td_attributes,
            measurements.xfam,
            measurements.mrtd,
            measurements.mrconfigid,
            measurements.mrowner,
            measurements.mrownerconfig,
            *measurements.rtmrs,
            report_data,
        )
    )
    if len(body) != TD_REPORT10_LEN:
        raise ValueError("TD report fields have the wrong sizes")
    return body


def _qe_report(qe: QuotingEnclave, report_data: bytes) -> bytes:
    return _QE_REPORT.pack(
        qe.cpu_svn,
        qe.misc_select,
        bytes(28),
        qe.attributes,
        qe.mr_enclave,
        bytes(32),
        qe.mr_signer,
        bytes(96),
        qe.isv_prod_id,
        qe.isv_svn,
        bytes(60),
        report_data,
    )


def _certification_data(cert_type: int, body: bytes) -> bytes:
    return struct.pack("<HI", cert_type, len(body)) + body


def build_quote(
    *,
    measurements: SimulatedMeasurements,
    report_data: bytes,
    module: TdxModule,
    qe: QuotingEnclave,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: str,
) -> bytes:
    """Assemble and sign a TDX v4 quote."""
    if len(report_data) != 64:
        raise ValueError("report_data must be 64 bytes")
    signed = _header(qe) + _td_report10(measurements, module, report_data)

    attestation_public = raw_public_key(attestation_key.public_key())
    binding = hashlib.sha256(attestation_public + QE_AUTH_DATA).digest() + bytes(32)
    qe_report = _qe_report(qe, binding)
    qe_report_data = b"".join(
        (
            qe_report,
            raw_signature(pck_key, qe_report),
            struct.pack("<H", len(QE_AUTH_DATA)),
            QE_AUTH_DATA,
            _certification_data(CERT_TYPE_PCK_CHAIN, pck_chain_pem.encode("ascii")),
        )
    )
    signature_data = b"".join(
        (
            raw_signature(attestation_key, signed),
            attestation_public,
            _certification_data(CERT_TYPE_QE_REPORT, qe_report_data),
        )
    )
    return signed + struct.pack("<I", len(signature_data)) + signature_data
