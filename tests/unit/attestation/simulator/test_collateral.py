"""Simulated collateral: the vectors' JSON layout, dcap-qvl's type, Intel's document shapes."""

from __future__ import annotations

import json

import dcap_qvl
import pytest

from enclave_dev.tee import Simulator
from tests.vectors import load_json

from .conftest import NOW

FIELDS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


def test_collateral_json_has_the_vector_layout(simulator: Simulator) -> None:
    ours = json.loads(simulator.collateral_json())
    real = load_json("tdx/tdx_quote_collateral.json")

    assert list(ours) == list(real)
    for name in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        bytes.fromhex(ours[name])
    assert len(bytes.fromhex(ours["tcb_info_signature"])) == 64  # raw r || s, as Intel's


def test_collateral_json_round_trips_into_dcap_qvl(simulator: Simulator) -> None:
    parsed = dcap_qvl.QuoteCollateralV3.from_json(simulator.collateral_json())
    direct = simulator.collateral()

    for name in FIELDS:
        assert getattr(parsed, name) == getattr(direct, name), name
    report = dcap_qvl.verify_with_root_ca(
        simulator.quote(bytes(64)), parsed, simulator.root_ca_der, NOW
    )
    assert report.status == "UpToDate"


def test_tcb_info_has_intels_tdx_shape(simulator: Simulator) -> None:
    tcb_info = json.loads(simulator.collateral().tcb_info)
    real = json.loads(load_json("tdx/tdx_quote_collateral.json")["tcb_info"])

    assert list(tcb_info) == list(real)
    assert tcb_info["id"] == "TDX"
    assert tcb_info["version"] == 3
    assert tcb_info["fmspc"] == simulator.fmspc.hex().upper()
    assert [i["id"] for i in tcb_info["tdxModuleIdentities"]] == ["TDX_01"]
    for level in tcb_info["tcbLevels"]:
        assert len(level["tcb"]["sgxtcbcomponents"]) == 16
        assert len(level["tcb"]["tdxtcbcomponents"]) == 16
    assert tcb_info["tcbLevels"][0]["tcbStatus"] == "UpToDate"


def test_qe_identity_has_intels_td_qe_shape(simulator: Simulator) -> None:
    identity = json.loads(simulator.collateral().qe_identity)
    real = json.loads(load_json("tdx/tdx_quote_collateral.json")["qe_identity"])

    assert list(identity) == list(real)
    assert identity["id"] == "TD_QE"
    assert identity["version"] == 2


def test_validity_window_surrounds_now(simulator: Simulator) -> None:
    tcb_info = json.loads(simulator.collateral().tcb_info)

    assert tcb_info["issueDate"] == "2027-01-15T07:00:00Z"  # an hour before NOW
    assert tcb_info["nextUpdate"] == "2027-02-14T08:00:00Z"  # 30 days after NOW
    assert simulator.now == NOW
    assert simulator.collateral_next_update == NOW + 30 * 86_400


def test_out_of_date_collateral_puts_the_platform_below_up_to_date(outdated: Simulator) -> None:
    levels = json.loads(outdated.collateral().tcb_info)["tcbLevels"]

    assert [level["tcbStatus"] for level in levels] == ["UpToDate", "OutOfDate", "OutOfDate"]
    assert levels[1]["advisoryIDs"] == ["SIM-SA-00001"]


def test_issuer_chains_hold_the_signing_certificate_then_the_root(simulator: Simulator) -> None:
    collateral = simulator.collateral()
    root_pem = simulator.root_ca_pem.decode()

    for chain in (collateral.tcb_info_issuer_chain, collateral.qe_identity_issuer_chain):
        assert chain.count("BEGIN CERTIFICATE") == 2
        assert chain.endswith(root_pem)
    assert collateral.pck_crl_issuer_chain.count("BEGIN CERTIFICATE") == 2
    assert collateral.pck_crl_issuer_chain.endswith(root_pem)


def test_nothing_private_in_collateral(simulator: Simulator) -> None:
    assert "PRIVATE" not in simulator.collateral_json()


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"tcb": "Revoked"}, "tcb"),
        ({"validity_days": 0}, "validity_days"),
        ({"validity_days": 100_000}, "validity_days"),
        ({"now": -1}, "now"),
        ({"now": 12}, "now"),
        ({"advisory_ids": "SIM-SA-00001"}, "advisory_ids"),
    ],
)
def test_create_refuses_bad_arguments(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Simulator.create(**kwargs)  # type: ignore[arg-type]


def test_with_measurements_refuses_other_types(simulator: Simulator) -> None:
    with pytest.raises(ValueError, match="SimulatedMeasurements"):
        simulator.with_measurements(object())  # type: ignore[arg-type]
