"""Simulated quotes against the real dcap-qvl: accepted under the simulated root only."""

from __future__ import annotations

import json

import dcap_qvl
import pytest

from enclave_dev.tee import SimulatedMeasurements, Simulator

from .conftest import NOW


def test_quote_verifies_as_up_to_date(simulator: Simulator, report_data: bytes) -> None:
    quote = simulator.quote(report_data)

    report = dcap_qvl.verify_with_root_ca(quote, simulator.collateral(), simulator.root_ca_der, NOW)

    assert report.status == "UpToDate"
    assert report.advisory_ids == []


def test_quote_passes_dcap_qvl_strict_policy(simulator: Simulator, report_data: bytes) -> None:
    verifier = dcap_qvl.QuoteVerifier(simulator.root_ca_der)
    claims = verifier.verify_with_policy(
        simulator.quote(report_data),
        simulator.collateral(),
        NOW,
        dcap_qvl.QuotePolicy.strict(NOW),
    )

    assert json.loads(claims.to_json())["tcb"]["status"] == "UpToDate"


def test_out_of_date_variant_reports_out_of_date(outdated: Simulator, report_data: bytes) -> None:
    report = dcap_qvl.verify_with_root_ca(
        outdated.quote(report_data), outdated.collateral(), outdated.root_ca_der, NOW
    )

    assert report.status == "OutOfDate"
    assert report.advisory_ids == ["SIM-SA-00001"]


@pytest.mark.parametrize("tcb", ["UpToDate", "OutOfDate"])
def test_advisory_ids_are_reported(tcb: str, report_data: bytes) -> None:
    sim = Simulator.create(now=NOW, tcb=tcb, advisory_ids=["SIM-SA-01234", "SIM-SA-05678"])  # type: ignore[arg-type]

    report = dcap_qvl.verify_with_root_ca(
        sim.quote(report_data), sim.collateral(), sim.root_ca_der, NOW
    )

    assert report.status == tcb
    assert report.advisory_ids == ["SIM-SA-01234", "SIM-SA-05678"]


def test_intel_root_rejects_simulated_quote(simulator: Simulator, report_data: bytes) -> None:
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify(simulator.quote(report_data), simulator.collateral(), NOW)


def test_another_simulators_root_rejects_quote(simulator: Simulator, report_data: bytes) -> None:
    other = Simulator.create(now=NOW)

    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(
            simulator.quote(report_data), simulator.collateral(), other.root_ca_der, NOW
        )


def test_another_simulators_collateral_rejects_quote(
    simulator: Simulator, report_data: bytes
) -> None:
    other = Simulator.create(now=NOW)

    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(
            simulator.quote(report_data), other.collateral(), simulator.root_ca_der, NOW
        )


def test_now_after_collateral_next_update_fails(simulator: Simulator, report_data: bytes) -> None:
    late = simulator.collateral_next_update + 1

    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(
            simulator.quote(report_data), simulator.collateral(), simulator.root_ca_der, late
        )


def test_last_second_of_collateral_window_still_verifies(
    simulator: Simulator, report_data: bytes
) -> None:
    report = dcap_qvl.verify_with_root_ca(
        simulator.quote(report_data),
        simulator.collateral(),
        simulator.root_ca_der,
        simulator.collateral_next_update,
    )

    assert report.status == "UpToDate"


def test_now_before_collateral_issue_date_fails(simulator: Simulator, report_data: bytes) -> None:
    with pytest.raises(ValueError, match="in the future"):
        dcap_qvl.verify_with_root_ca(
            simulator.quote(report_data),
            simulator.collateral(),
            simulator.root_ca_der,
            NOW - 2 * 3600,
        )


def test_validity_days_sets_the_window(report_data: bytes) -> None:
    sim = Simulator.create(now=NOW, validity_days=2)

    assert sim.collateral_next_update == NOW + 2 * 86_400
    with pytest.raises(ValueError, match="Verification failed"):
        dcap_qvl.verify_with_root_ca(
            sim.quote(report_data), sim.collateral(), sim.root_ca_der, NOW + 3 * 86_400
        )


def test_debug_td_is_refused_by_dcap_qvl(simulator: Simulator, report_data: bytes) -> None:
    debug = SimulatedMeasurements(td_attributes=bytes.fromhex("0100001000000000"))
    sim = simulator.with_measurements(debug)

    assert sim.measurements.debug
    with pytest.raises(ValueError, match="Debug mode"):
        dcap_qvl.verify_with_root_ca(sim.quote(report_data), sim.collateral(), sim.root_ca_der, NOW)


def test_with_measurements_keeps_pki_and_collateral(
    simulator: Simulator, report_data: bytes
) -> None:
    changed = simulator.with_measurements(SimulatedMeasurements(mrtd=b"\x42" * 48))

    assert changed.root_ca_der == simulator.root_ca_der
    assert changed.collateral_json() == simulator.collateral_json()
    quote = changed.quote(report_data)
    report = dcap_qvl.verify_with_root_ca(quote, simulator.collateral(), simulator.root_ca_der, NOW)
    assert report.status == "UpToDate"
    assert dcap_qvl.parse_quote(quote).report.mr_td == b"\x42" * 48
