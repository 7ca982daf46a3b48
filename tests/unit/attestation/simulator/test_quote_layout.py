"""dcap-qvl's parser reads back what the simulator was told to put into the quote."""

from __future__ import annotations

import hashlib

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enclave_dev.tee import (
    DEFAULT_TD_ATTRIBUTES,
    DEFAULT_XFAM,
    SIMULATED_FMSPC,
    SimulatedMeasurements,
    Simulator,
    default_measurement,
)
from tests.vectors import load_bytes

CUSTOM = SimulatedMeasurements(
    mrtd=b"\x01" * 48,
    rtmrs=(b"\x10" * 48, b"\x11" * 48, b"\x12" * 48, b"\x13" * 48),
    mrconfigid=b"\x02" * 48,
    mrowner=b"\x03" * 48,
    mrownerconfig=b"\x04" * 48,
    td_attributes=bytes.fromhex("0000001000000000"),
    xfam=bytes.fromhex("e700060000000000"),
)


def test_parse_quote_reads_back_measurements_and_report_data(simulator: Simulator) -> None:
    report_data = hashlib.sha256(b"claims").digest() + bytes(32)
    quote = simulator.with_measurements(CUSTOM).quote(report_data)

    parsed = dcap_qvl.parse_quote(quote)
    body = parsed.report

    assert parsed.is_tdx()
    assert parsed.header.version == 4
    assert parsed.header.tee_type == 0x81
    assert parsed.header.attestation_key_type == 2
    assert isinstance(body, dcap_qvl.TdReport10)
    assert body.mr_td == CUSTOM.mrtd
    assert (body.rt_mr0, body.rt_mr1, body.rt_mr2, body.rt_mr3) == CUSTOM.rtmrs
    assert body.mr_config_id == CUSTOM.mrconfigid
    assert body.mr_owner == CUSTOM.mrowner
    assert body.mr_owner_config == CUSTOM.mrownerconfig
    assert body.td_attributes == CUSTOM.td_attributes
    assert body.xfam == CUSTOM.xfam
    assert body.report_data == report_data
    assert body.tee_tcb_svn == bytes([5, 1, 2]) + bytes(13)


def test_default_measurements_are_the_documented_values() -> None:
    m = SimulatedMeasurements()

    assert m.mrtd == hashlib.sha384(b"enclave-simulator/mrtd").digest()
    assert m.rtmrs == tuple(default_measurement(f"rtmr{i}") for i in range(4))
    assert m.mrconfigid == default_measurement("mrconfigid")
    assert m.mrowner == default_measurement("mrowner")
    assert m.mrownerconfig == default_measurement("mrownerconfig")
    assert m.td_attributes == DEFAULT_TD_ATTRIBUTES
    assert m.xfam == DEFAULT_XFAM
    assert not m.debug
    assert len(set(m.rtmrs)) == 4


def test_default_quote_reports_default_measurements(simulator: Simulator) -> None:
    body = dcap_qvl.parse_quote(simulator.quote(bytes(64))).report

    assert body.mr_td == default_measurement("mrtd")
    assert body.rt_mr3 == default_measurement("rtmr3")
    assert body.td_attributes[0] & 0x01 == 0


def test_pck_extension_carries_the_platform_identity(simulator: Simulator) -> None:
    parsed = dcap_qvl.parse_quote(simulator.quote(bytes(64)))
    ext = parsed.pck_extension()

    assert ext is not None
    assert ext.fmspc == SIMULATED_FMSPC == simulator.fmspc
    assert parsed.fmspc() == SIMULATED_FMSPC.hex().upper()
    assert ext.pce_svn == 11
    assert ext.pce_id == bytes(2)
    assert ext.cpu_svn == bytes([3, 3, 2, 2, 4, 1, 0, 5]) + bytes(8)
    assert ext.sgx_type == 1
    assert len(ext.ppid) == 16
    assert ext.platform_instance_id is not None
    assert len(ext.platform_instance_id) == 16


def _sgx_oids(ext: dcap_qvl.PckExtension) -> list[str]:
    base = "1.2.840.113741.1.13.1"
    candidates = [f"{base}.{i}" for i in range(1, 8)]
    candidates += [f"{base}.2.{i}" for i in range(1, 19)]
    candidates += [f"{base}.7.{i}" for i in range(1, 4)]
    return [oid for oid in candidates if ext.get_value(oid) is not None]


def test_sgx_extension_has_the_same_entries_as_a_real_pck_certificate(
    simulator: Simulator,
) -> None:
    real = dcap_qvl.parse_quote(load_bytes("tdx/tdx_quote")).pck_extension()
    ours = dcap_qvl.parse_quote(simulator.quote(bytes(64))).pck_extension()

    assert real is not None
    assert ours is not None
    assert _sgx_oids(ours) == _sgx_oids(real)
    assert len(_sgx_oids(ours)) == 7 + 18 + 3


def test_tcb_component_svns_match_cpusvn(simulator: Simulator) -> None:
    ext = dcap_qvl.parse_quote(simulator.quote(bytes(64))).pck_extension()
    assert ext is not None

    for index, svn in enumerate(ext.cpu_svn, start=1):
        assert ext.get_value(f"1.2.840.113741.1.13.1.2.{index}") == bytes([svn])


def test_pck_chain_is_leaf_platform_ca_root(simulator: Simulator) -> None:
    pem = dcap_qvl.parse_quote(simulator.quote(bytes(64))).cert_chain_pem_bytes()
    assert pem is not None
    leaf, platform_ca, root = x509.load_pem_x509_certificates(pem)

    assert root.public_bytes(Encoding.DER) == simulator.root_ca_der
    assert leaf.issuer == platform_ca.subject
    assert platform_ca.issuer == root.subject == root.issuer
    for cert in (leaf, platform_ca, root):
        assert "SIMULATED" in cert.subject.rfc4514_string()
    sgx = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.2.840.113741.1.13.1"))
    assert not sgx.critical
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert platform_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("size", [0, 32, 63, 65])
def test_report_data_must_be_64_bytes(simulator: Simulator, size: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        simulator.quote(bytes(size))


def test_report_data_must_be_bytes(simulator: Simulator) -> None:
    with pytest.raises(ValueError, match="bytes"):
        simulator.quote("x" * 64)  # type: ignore[arg-type]


def test_each_quote_is_freshly_signed(simulator: Simulator) -> None:
    first = simulator.quote(bytes(64))
    second = simulator.quote(bytes(64))

    assert first[:632] == second[:632]  # same header and body
    assert first != second  # ECDSA signatures are randomised
