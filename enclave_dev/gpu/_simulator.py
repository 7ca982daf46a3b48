"""A SIMULATED NVIDIA-like GPU: device PKI and attestation reports with the real structure.

For tests and ``enclave demo`` only, chosen explicitly (``gpu_provider = "simulated"``), and
announced loudly. The shape follows a real H100 (tests/vectors/gpu)::

    SIMULATED NVIDIA Device Identity CA (self-signed root)
    └── SIMULATED GH100 Provisioner ICA
        └── SIMULATED GH100 GSP FMC LF #n   leaf per GPU: FWID extension, signs the reports

Reports are SPDM GET_MEASUREMENTS request + MEASUREMENTS response byte-for-byte in the layout
``attestation.gpu._report`` parses (64 DMTF measurement blocks, NVIDIA opaque fields with the
driver and VBIOS versions and the FWID, an ECDSA P-384 signature), so the real verifier
verifies them, but only when it is handed this simulator's root: the pinned NVIDIA root never
trusts them. Keys live only in this process's memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from attestation.gpu._certs import FWID_OIDS, Architecture
from attestation.gpu.evidence import CcMode, GpuEvidence

__all__ = ["SIMULATED_GPU_WARNING", "GpuSimulator", "simulated_measurements"]

SIMULATED_GPU_WARNING = (
    "SIMULATED GPU: GPU attestation reports are signed by a simulated NVIDIA-like root, not "
    "by NVIDIA hardware, and prove nothing about this machine's GPUs; they verify only "
    "against the simulator's own root. Never use this in production."
)
_ORGANIZATION = "SIMULATED - not NVIDIA Corporation - never trust"
_LIFETIME = dt.timedelta(days=3650)
_SHA384_OID = bytes.fromhex("0609608648016503040202")  # DER OID 2.16.840.1.101.3.4.2.2
_MEASUREMENT_BLOCKS = 64


def simulated_measurements(seed: bytes = b"") -> dict[int, bytes]:
    """64 SHA-384-sized values like a real H100's (some zero), derived from ``seed``."""
    return {
        index: bytes(48)
        if index in (1, 9, 11) or index > 41
        else hashlib.sha384(b"simulated GPU measurement %d " % index + seed).digest()
        for index in range(1, _MEASUREMENT_BLOCKS + 1)
    }


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
        ]
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    now: dt.datetime,
    extra: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + _LIFETIME)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    for extension in extra:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _fwid_extension(architecture: Architecture, fwid: bytes) -> x509.UnrecognizedExtension:
    # DiceTcbInfo { fwids [6] { { sha384, fwid } } }: fwids[0] for Blackwell, and its last 48
    # bytes for Hopper's legacy reading.
    fwids = _der(0xA6, _der(0x30, _SHA384_OID + _der(0x04, fwid)))
    value = _der(0x30, fwids)
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(FWID_OIDS[architecture]), value)


def _vbios_bytes(version: str) -> bytes:
    parts = version.split(".")
    if len(parts) != 5:
        raise ValueError("a VBIOS version has five dotted hex parts")
    digits = "000000" + parts[4] + "".join(parts[:4])
    return bytes.fromhex(digits)[::-1]


def _tlv(field_type: int, value: bytes) -> bytes:
    return field_type.to_bytes(2, "little") + len(value).to_bytes(2, "little") + value


@dataclass(frozen=True)
class _Device:
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]  # leaf first, root last
    fwid: bytes


class GpuSimulator:
    """``count`` simulated GPUs of one architecture, driver, VBIOS and measurement set."""

    def __init__(
        self,
        *,
        count: int = 1,
        architecture: Architecture = "hopper",
        driver_version: str = "550.90.07",
        vbios_version: str = "96.00.9f.00.01",
        measurements: Mapping[int, bytes] | None = None,
        cc_mode: CcMode = "on",
        ready: bool = True,
        now: dt.datetime | None = None,
    ) -> None:
        if not 1 <= count <= 16:
            raise ValueError("a simulator has 1..16 GPUs")
        at = now or dt.datetime.now(dt.UTC)
        self.architecture: Architecture = architecture
        self.driver_version = driver_version
        self.vbios_version = vbios_version
        self.measurements = dict(measurements or simulated_measurements())
        self.cc_mode: CcMode = cc_mode
        self.ready = ready
        root_key = ec.generate_private_key(ec.SECP384R1())
        self._root_key = root_key
        self._root = _issue(
            "SIMULATED NVIDIA Device Identity CA", root_key, None, root_key, ca=True, now=at
        )
        ica_key = ec.generate_private_key(ec.SECP384R1())
        ica = _issue(
            "SIMULATED GH100 Provisioner ICA", ica_key, self._root, root_key, ca=True, now=at
        )
        self._devices: list[_Device] = []
        for index in range(count):
            key = ec.generate_private_key(ec.SECP384R1())
            fwid = hashlib.sha384(b"simulated GPU firmware %d" % index).digest()
            leaf = _issue(
                f"SIMULATED GH100 GSP FMC LF {index}",
                key,
                ica,
                ica_key,
                ca=False,
                now=at,
                extra=(_fwid_extension(architecture, fwid),),
            )
            self._devices.append(_Device(key=key, chain=(leaf, ica, self._root), fwid=fwid))

    @property
    def count(self) -> int:
        return len(self._devices)

    @property
    def root_der(self) -> bytes:
        return self._root.public_bytes(serialization.Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self._root.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self, index: int) -> bytes:
        return b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in self._devices[index].chain
        )

    def ocsp_responses(
        self,
        index: int,
        *,
        status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
        now: dt.datetime | None = None,
        lifetime: dt.timedelta = dt.timedelta(days=1),
    ) -> dict[str, bytes]:
        """OCSP responses (signed by the simulated root) for the chain positions NVIDIA checks,
        keyed by ``attestation.gpu.revocation.certificate_key``."""
        from attestation.gpu.revocation import certificate_key, checked_positions

        at = now or dt.datetime.now(dt.UTC)
        chain = self._devices[index].chain
        out = {}
        for position in checked_positions(chain):
            cert, issuer = chain[position], chain[position + 1]
            revoked = status == ocsp.OCSPCertStatus.REVOKED
            response = (
                ocsp.OCSPResponseBuilder()
                .add_response(
                    cert,
                    issuer,
                    hashes.SHA384(),
                    status,
                    at - dt.timedelta(minutes=1),
                    at + lifetime,
                    at - dt.timedelta(hours=1) if revoked else None,
                    x509.ReasonFlags.key_compromise if revoked else None,
                )
                .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
                .sign(self._root_key, hashes.SHA384())
            )
            out[certificate_key(cert)] = response.public_bytes(serialization.Encoding.DER)
        return out

    def report(self, index: int, nonce: bytes) -> bytes:
        """GPU ``index``'s attestation report for ``nonce``, as NVML would return it."""
        if len(nonce) != 32:
            raise ValueError("an SPDM nonce is 32 bytes")
        device = self._devices[index]
        request = bytes([0x11, 0xE0, 0x01, 0xFF]) + nonce + b"\x00"
        record = b"".join(
            bytes([i, 1])
            + (3 + len(v)).to_bytes(2, "little")
            + b"\x01"
            + len(v).to_bytes(2, "little")
            + v
            for i, v in sorted(self.measurements.items())
        )
        counts = b"".join(
            (0 if v == bytes(len(v)) else 1).to_bytes(4, "little")
            for _, v in sorted(self.measurements.items())
        )
        opaque = b"".join(
            (
                _tlv(3, self.driver_version.encode() + b"\x00"),
                _tlv(4, bytes.fromhex("8001000000000000")),
                _tlv(6, _vbios_bytes(self.vbios_version)),
                _tlv(11, b"U"),
                _tlv(12, counts),
                _tlv(14, bytes.fromhex("b1030000")),
                _tlv(15, b"882\x00\x00\x00\x00\x00\x00"),
                _tlv(17, b"1010\x00"),
                _tlv(18, b"0200\x00"),
                _tlv(20, device.fwid),
            )
        )
        response = (
            bytes([0x11, 0x60, 0x00, 0x00, len(self.measurements)])
            + len(record).to_bytes(3, "little")
            + record
            + os.urandom(32)
            + len(opaque).to_bytes(2, "little")
            + opaque
        )
        signed = request + response
        r, s = utils.decode_dss_signature(device.key.sign(signed, ec.ECDSA(hashes.SHA384())))
        return signed + r.to_bytes(48, "big") + s.to_bytes(48, "big")

    def evidence(self, nonce: bytes) -> tuple[GpuEvidence, ...]:
        """Every GPU's evidence for ``nonce``, with this simulator's CC state."""
        return tuple(
            GpuEvidence(
                architecture=self.architecture,
                report=self.report(index, nonce),
                cert_chain=tuple(c.public_bytes(serialization.Encoding.DER) for c in device.chain),
                cc_mode=self.cc_mode,
                ready=self.ready,
            )
            for index, device in enumerate(self._devices)
        )
