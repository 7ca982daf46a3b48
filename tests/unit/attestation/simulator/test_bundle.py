"""write_bundle: files a verifier (and a person) can use, and no private key."""

from __future__ import annotations

from pathlib import Path

import dcap_qvl
import pytest

from enclave_dev.tee import BUNDLE_REPORT_DATA, SimulatedMeasurements, write_bundle

from .conftest import NOW


def test_bundle_files_verify_with_the_real_dcap_qvl(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "out", now=NOW)

    collateral = dcap_qvl.QuoteCollateralV3.from_json(bundle.collateral.read_text())
    report = dcap_qvl.verify_with_root_ca(
        bundle.quote.read_bytes(), collateral, bundle.root_ca_der.read_bytes(), NOW
    )

    assert report.status == "UpToDate"
    body = dcap_qvl.parse_quote(bundle.quote.read_bytes()).report
    assert body.report_data == BUNDLE_REPORT_DATA
    assert body.mr_td == SimulatedMeasurements().mrtd


def test_bundle_writes_exactly_the_listed_files_and_no_key(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path, now=NOW)

    listed = {bundle.quote, bundle.collateral, bundle.root_ca_pem, bundle.root_ca_der}
    listed.add(bundle.readme)
    assert set(tmp_path.iterdir()) == listed
    for path in listed:
        assert b"PRIVATE KEY" not in path.read_bytes()
    assert bundle.root_ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_bundle_readme_warns_and_shows_the_command(tmp_path: Path) -> None:
    readme = write_bundle(tmp_path, now=NOW).readme.read_text()

    assert "SIMULATED" in readme
    assert "Never trust" in readme
    assert "enclave attest verify-quote --quote quote.bin --collateral collateral.json" in readme
    assert f"--root-ca root_ca.der --now {NOW}" in readme


def test_bundle_takes_mrtd_and_rtmrs(tmp_path: Path) -> None:
    rtmrs = [bytes([i]) * 48 for i in range(4)]
    bundle = write_bundle(tmp_path, mrtd=b"\xab" * 48, rtmrs=rtmrs, now=NOW)

    body = dcap_qvl.parse_quote(bundle.quote.read_bytes()).report
    assert body.mr_td == b"\xab" * 48
    assert [body.rt_mr0, body.rt_mr1, body.rt_mr2, body.rt_mr3] == rtmrs
    assert (b"\xab" * 48).hex() in bundle.readme.read_text()


@pytest.mark.parametrize("rtmrs", [[b"\x00" * 48] * 3, [b"\x00" * 48] * 5, [b"\x00" * 47] * 4])
def test_bundle_refuses_bad_rtmrs(tmp_path: Path, rtmrs: list[bytes]) -> None:
    with pytest.raises(ValueError, match="rtmrs"):
        write_bundle(tmp_path, rtmrs=rtmrs, now=NOW)
    assert list(tmp_path.iterdir()) == []


def test_bundle_refuses_bad_mrtd(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mrtd"):
        write_bundle(tmp_path, mrtd=b"\x00" * 32, now=NOW)
