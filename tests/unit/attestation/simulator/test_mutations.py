"""A flipped bit anywhere that is signed or bound must make the real dcap-qvl refuse."""

from __future__ import annotations

import dcap_qvl
import pytest

from enclave_dev.tee import Simulator

from .conftest import NOW

# Offsets in a simulated TDX v4 quote (see enclave_dev/tee/_quote.py).
BODY = 48
SIGNATURE_DATA = BODY + 584 + 4
ATTESTATION_KEY = SIGNATURE_DATA + 64
QE_REPORT = ATTESTATION_KEY + 64 + 6
QE_REPORT_SIGNATURE = QE_REPORT + 384
QE_AUTH_DATA = QE_REPORT_SIGNATURE + 64 + 2
PCK_CHAIN = QE_AUTH_DATA + 32 + 6

CASES = {
    "header user data": (30, "ISV enclave report signature is invalid"),
    "QE vendor ID": (12, "Unknown QE vendor ID"),
    "TEE TCB SVN": (BODY, "ISV enclave report signature is invalid"),
    "MRTD": (BODY + 136, "ISV enclave report signature is invalid"),
    "RTMR0": (BODY + 328, "ISV enclave report signature is invalid"),
    "report_data": (BODY + 520, "ISV enclave report signature is invalid"),
    "last byte of report_data": (BODY + 583, "ISV enclave report signature is invalid"),
    "quote signature r": (SIGNATURE_DATA, "ISV enclave report signature is invalid"),
    "quote signature s": (SIGNATURE_DATA + 63, "ISV enclave report signature is invalid"),
    "attestation key": (ATTESTATION_KEY, "QE report hash mismatch"),
    "QE report CPUSVN": (QE_REPORT, "Signature is invalid for qe_report"),
    "QE report MRSIGNER": (QE_REPORT + 128, "Signature is invalid for qe_report"),
    "QE report report_data": (QE_REPORT + 320, "Signature is invalid for qe_report"),
    "QE report signature": (QE_REPORT_SIGNATURE, "Signature is invalid for qe_report"),
    "QE auth data": (QE_AUTH_DATA, "QE report hash mismatch"),
    "PCK leaf certificate": (PCK_CHAIN + 100, "Failed to verify certificate chain"),
}


@pytest.fixture(scope="module")
def quote(simulator: Simulator) -> bytes:
    return simulator.quote(bytes(range(64)))


def test_offsets_point_where_the_layout_says(quote: bytes) -> None:
    assert quote[PCK_CHAIN - 6 : PCK_CHAIN - 4] == b"\x05\x00"  # certification data type 5
    assert quote[PCK_CHAIN:].startswith(b"-----BEGIN CERTIFICATE-----")
    assert quote[QE_AUTH_DATA : QE_AUTH_DATA + 32] == bytes(range(32))
    assert quote[BODY + 520 : BODY + 584] == bytes(range(64))


@pytest.mark.parametrize(("offset", "reason"), CASES.values(), ids=CASES.keys())
def test_flipped_bit_is_refused(
    simulator: Simulator, quote: bytes, offset: int, reason: str
) -> None:
    mutated = bytearray(quote)
    mutated[offset] ^= 0x01

    with pytest.raises(ValueError, match=reason):
        dcap_qvl.verify_with_root_ca(
            bytes(mutated), simulator.collateral(), simulator.root_ca_der, NOW
        )


def test_truncated_quote_is_refused(simulator: Simulator, quote: bytes) -> None:
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(
            quote[:-1500], simulator.collateral(), simulator.root_ca_der, NOW
        )


def _collateral_with(simulator: Simulator, **changes: object) -> dcap_qvl.QuoteCollateralV3:
    c = simulator.collateral()
    fields = {
        "pck_crl_issuer_chain": c.pck_crl_issuer_chain,
        "root_ca_crl": c.root_ca_crl,
        "pck_crl": c.pck_crl,
        "tcb_info_issuer_chain": c.tcb_info_issuer_chain,
        "tcb_info": c.tcb_info,
        "tcb_info_signature": c.tcb_info_signature,
        "qe_identity_issuer_chain": c.qe_identity_issuer_chain,
        "qe_identity": c.qe_identity,
        "qe_identity_signature": c.qe_identity_signature,
    }
    fields.update(changes)
    return dcap_qvl.QuoteCollateralV3(**fields)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def test_collateral_unchanged_copy_still_verifies(simulator: Simulator, quote: bytes) -> None:
    report = dcap_qvl.verify_with_root_ca(
        quote, _collateral_with(simulator), simulator.root_ca_der, NOW
    )
    assert report.status == "UpToDate"


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("tcb_info_signature", "tcb_info"),
        ("qe_identity_signature", "qe_identity"),
        ("root_ca_crl", "Verification failed"),
        ("pck_crl", "Verification failed"),
    ],
)
def test_flipped_collateral_signature_is_refused(
    simulator: Simulator, quote: bytes, field: str, reason: str
) -> None:
    original: bytes = getattr(simulator.collateral(), field)
    collateral = _collateral_with(simulator, **{field: _flip(original, len(original) - 1)})

    with pytest.raises(ValueError, match=reason):
        dcap_qvl.verify_with_root_ca(quote, collateral, simulator.root_ca_der, NOW)


def test_edited_tcb_info_is_refused(simulator: Simulator, quote: bytes) -> None:
    edited = simulator.collateral().tcb_info.replace('"OutOfDate"', '"UpToDate"')
    assert edited != simulator.collateral().tcb_info
    collateral = _collateral_with(simulator, tcb_info=edited)

    with pytest.raises(ValueError, match="Signature is invalid for tcb_info"):
        dcap_qvl.verify_with_root_ca(quote, collateral, simulator.root_ca_der, NOW)
