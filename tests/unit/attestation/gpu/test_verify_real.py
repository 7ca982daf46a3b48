"""GPU verification on real H100 evidence (tests/vectors/gpu, from confidential-containers/
trustee): byte-exact claims, and each defect refused with its own reason code."""

from __future__ import annotations

import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.errors import VerificationError
from attestation.gpu import (
    NVIDIA_DEVICE_ROOT_PEM,
    GpuPolicy,
    GpuReason,
    parse_gpu_report,
    verify_gpu_report,
)
from attestation.gpu._report import REQUEST_SIZE, SIGNATURE_SIZE
from tests.vectors import load_bytes

NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
FWID = (
    "f5c384aebb579217a2c66b17ed0f28e6a9b8d639"
    "041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d"
)


def report() -> bytes:
    return bytes.fromhex(load_bytes("gpu/hopperAttestationReport.txt").decode().strip())


def chain(case: int = 1) -> bytes:
    return load_bytes(f"gpu/hopper_cert_chain_case{case}.txt")


def verify(data: bytes | None = None, certs: bytes | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    kwargs.setdefault("nonce", NONCE)
    return verify_gpu_report(data or report(), certs or chain(), **kwargs)  # type: ignore[arg-type]


def reason_of(**kwargs: object) -> str:
    with pytest.raises(VerificationError) as info:
        verify(**kwargs)  # type: ignore[arg-type]
    return info.value.reason


def test_real_h100_report_verifies_and_claims_are_byte_exact() -> None:
    verified = verify()
    assert verified.architecture == "hopper"
    assert verified.fwid.hex() == FWID
    assert (verified.driver_version, verified.vbios_version) == ("550.90.07", "96.00.9f.00.01")
    assert len(verified.measurements) == 64
    # The other verifier's claims, minus the uuid its harness supplied (not in the report),
    # serialised the way it serialises them (serde_json: compact, keys in sorted order).
    expected = load_bytes("gpu/hopperAttestationReport-claims.txt").decode()
    expected = expected.replace(',"uuid":"1111-2222-33333-444444-555555"', "")
    ours = json.dumps(verified.claims(), separators=(",", ":"), sort_keys=True)
    assert ours == expected


def test_pinned_root_is_the_vector_root() -> None:
    pinned = x509.load_pem_x509_certificate(NVIDIA_DEVICE_ROOT_PEM)
    vector = x509.load_pem_x509_certificate(load_bytes("gpu/nvidia_device_root.pem"))
    assert pinned == vector


def test_signing_certificate_alone_is_an_incomplete_chain() -> None:
    assert reason_of(certs=load_bytes("gpu/hopper_signing_cert.pem")) == "gpu_chain_incomplete"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (2, GpuReason.CHAIN_INCOMPLETE),  # only the root
        (3, GpuReason.CHAIN_INVALID),  # the Provisioner ICA missing
        (4, GpuReason.FWID_MISSING),  # the signing leaf missing
    ],
)
def test_broken_chains_each_have_their_reason(case: int, reason: str) -> None:
    assert reason_of(certs=chain(case)) == reason


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_chain_not_ending_in_the_pinned_root_is_untrusted() -> None:
    certs = x509.load_pem_x509_certificates(chain())
    assert reason_of(certs=_pem(certs[:-1])) == GpuReason.ROOT_UNTRUSTED


def test_reordered_chain_is_invalid() -> None:
    certs = x509.load_pem_x509_certificates(chain())
    swapped = [certs[0], certs[2], certs[1], certs[3], certs[4]]
    assert reason_of(certs=_pem(swapped)) == GpuReason.CHAIN_INVALID


def test_chain_outside_its_validity_is_expired() -> None:
    before = datetime.datetime(2019, 1, 1, tzinfo=datetime.UTC)
    assert reason_of(now=before) == GpuReason.CERT_EXPIRED


def test_garbage_chain_is_malformed() -> None:
    assert reason_of(certs=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") == (
        GpuReason.CHAIN_MALFORMED
    )


def test_every_flipped_bit_in_the_signed_part_is_refused() -> None:
    """A bit flipped in the signed bytes fails some check, never verifies: every byte of the
    request and the response header, then every fifth byte to the signature (about 10 ms a
    verification here), each time a different bit."""
    original = report()
    signed_length = len(parse_gpu_report(original).signed)
    offsets = sorted(set(range(64)) | set(range(64, signed_length, 5)) | {signed_length - 1})
    reasons: set[str] = set()
    for offset in offsets:
        mutated = bytearray(original)
        mutated[offset] ^= 1 << (offset % 8)
        with pytest.raises(VerificationError) as info:
            verify(bytes(mutated))
        reasons.add(info.value.reason)
    # Structure bytes fail parsing, FWID bytes (or the FWID field's type) fail the FWID steps,
    # request-nonce bytes fail the signature before the nonce step, the rest the signature.
    assert reasons <= {
        GpuReason.REPORT_MALFORMED,
        GpuReason.FWID_MISSING,
        GpuReason.FWID_MISMATCH,
        GpuReason.SIGNATURE_INVALID,
    }
    assert GpuReason.SIGNATURE_INVALID in reasons


def test_flipped_measurement_bit_is_a_signature_failure() -> None:
    original = bytearray(report())
    block = parse_gpu_report(bytes(original)).measurements[2]
    offset = bytes(original).index(block)
    original[offset] ^= 0x01
    assert reason_of(data=bytes(original)) == GpuReason.SIGNATURE_INVALID


def test_flipped_signature_bit_is_a_signature_failure() -> None:
    mutated = bytearray(report())
    mutated[-SIGNATURE_SIZE // 2] ^= 0x80
    assert reason_of(data=bytes(mutated)) == GpuReason.SIGNATURE_INVALID


def test_wrong_nonce_is_refused() -> None:
    assert reason_of(nonce=bytes(32)) == GpuReason.NONCE_MISMATCH


def test_wrong_fwid_is_refused() -> None:
    mutated = bytearray(report())
    offset = bytes(mutated).index(bytes.fromhex(FWID))
    mutated[offset] ^= 0x01
    assert reason_of(data=bytes(mutated)) == GpuReason.FWID_MISMATCH


def test_truncated_and_extended_reports_are_malformed() -> None:
    original = report()
    for data in (original[:-1], original + b"\x01", original[: REQUEST_SIZE + 10]):
        assert reason_of(data=data) == GpuReason.REPORT_MALFORMED


@pytest.mark.parametrize("zeros", [1, 7])
def test_zero_bytes_after_the_signature_are_accepted(zeros: int) -> None:
    """Regression: a Hopper report from a Confidential Containers guest carries one zero byte
    after the signature and was refused (``1 bytes after the signature``)."""
    verified = verify(report() + bytes(zeros))
    assert verified.fwid.hex() == FWID
    assert verified.report.signed == parse_gpu_report(report()).signed


@pytest.mark.parametrize("tail", [b"\x01", bytes(6) + b"\x80", b"\x00\xff\x00"])
def test_non_zero_bytes_after_the_signature_are_refused(tail: bytes) -> None:
    assert reason_of(data=report() + tail) == GpuReason.REPORT_MALFORMED


def test_architecture_claimed_wrongly_is_refused() -> None:
    assert reason_of(architecture="blackwell") == GpuReason.ARCHITECTURE_MISMATCH


def test_architecture_not_in_policy_is_refused() -> None:
    policy = GpuPolicy(architectures=frozenset({"blackwell"}))
    assert reason_of(policy=policy) == GpuReason.ARCHITECTURE_NOT_ALLOWED


def test_measurement_not_in_policy_is_refused() -> None:
    policy = GpuPolicy(measurements={2: frozenset({bytes(48)})})
    assert reason_of(policy=policy) == GpuReason.MEASUREMENT_NOT_ALLOWED


def test_measurement_index_absent_from_report_is_refused() -> None:
    policy = GpuPolicy(measurements={65: frozenset({bytes(48)})})
    assert reason_of(policy=policy) == GpuReason.MEASUREMENT_MISSING


def test_pinned_measurements_that_match_pass() -> None:
    values = parse_gpu_report(report()).measurements
    policy = GpuPolicy(measurements={i: frozenset({values[i], bytes(48)}) for i in (2, 3, 12)})
    assert verify(policy=policy).architecture == "hopper"


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (GpuPolicy(min_driver_version="550.90.8"), GpuReason.DRIVER_TOO_OLD),
        (GpuPolicy(min_driver_version="555.0"), GpuReason.DRIVER_TOO_OLD),
        (GpuPolicy(min_vbios_version="96.00.a0.00.00"), GpuReason.VBIOS_TOO_OLD),
    ],
)
def test_versions_below_the_minimum_are_refused(policy: GpuPolicy, reason: str) -> None:
    assert reason_of(policy=policy) == reason


def test_versions_at_the_minimum_pass() -> None:
    policy = GpuPolicy(min_driver_version="550.90.07", min_vbios_version="96.00.9f.00.01")
    assert verify(policy=policy).driver_version == "550.90.07"


@pytest.mark.parametrize(
    ("cc_mode", "ready", "reason"),
    [
        ("off", True, GpuReason.CC_OFF),
        ("devtools", True, GpuReason.DEVTOOLS),
        ("on", False, GpuReason.NOT_READY),
    ],
)
def test_cc_state_is_checked_when_supplied(cc_mode: str, ready: bool, reason: str) -> None:
    assert reason_of(cc_mode=cc_mode, ready=ready) == reason


def test_cc_on_and_ready_passes() -> None:
    assert verify(cc_mode="on", ready=True).cc_mode == "on"


def test_devtools_passes_only_with_the_insecure_policy(caplog: pytest.LogCaptureFixture) -> None:
    policy = GpuPolicy(insecure_allow_devtools=True)
    assert verify(cc_mode="devtools", ready=True, policy=policy).cc_mode == "devtools"
    assert "INSECURE" in caplog.text
