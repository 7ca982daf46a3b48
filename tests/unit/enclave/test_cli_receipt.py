"""``enclave receipt verify``: the vectors of tests/vectors/receipts through the command, each
failure its own reason and exit code, the evidence found next to a receipt the proxy kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from enclave.cli import main
from tests.vectors import vector_path

STREAMED = "rcpt_01010101010101010101010101010101"
WHOLE = "rcpt_02020202020202020202020202020202"


def _args(receipt_id: str, *extra: str, evidence: bool = True) -> list[str]:
    folder = vector_path("receipts/receipts.json").parent
    args = ["receipt", "verify", str(folder / f"{receipt_id}.json")]
    if evidence:
        args += ["--evidence", str(folder / "bundle.json")]
    return [
        *args,
        "--policy",
        str(folder / "policy.toml"),
        "--root-ca",
        str(folder / "root_ca.pem"),
        "--insecure-simulated-root",
        *extra,
    ]


def _bodies(receipt_id: str) -> list[str]:
    folder = vector_path("receipts/receipts.json").parent
    return [
        "--request",
        str(folder / f"{receipt_id}.request"),
        "--response",
        str(folder / f"{receipt_id}.response"),
    ]


@pytest.mark.parametrize("receipt_id", [STREAMED, WHOLE])
def test_a_vector_verifies_with_its_request_and_response(
    capsys: pytest.CaptureFixture[str], receipt_id: str
) -> None:
    assert main(_args(receipt_id, *_bodies(receipt_id))) == 0
    out = capsys.readouterr().out
    assert out.startswith("verified: yes\n")
    assert "7. request: ok" in out
    assert "8. response: ok" in out
    assert "insecure: insecure_root_ca_der" in out


def test_without_bodies_the_hash_steps_are_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_args(WHOLE), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["verified"] is True
    assert document["receipt"]["id"] == WHOLE
    assert document["steps"][6]["result"].startswith("skipped")


def test_a_changed_response_is_refused_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    response = tmp_path / "response"
    response.write_bytes(vector_path(f"receipts/{WHOLE}.response").read_bytes().replace(b"a", b"b"))
    request = str(vector_path(f"receipts/{WHOLE}.request"))
    code = main([*_args(WHOLE), "--request", request, "--response", str(response), "--json"])
    assert code == 1
    document = json.loads(capsys.readouterr().out)
    assert (document["verified"], document["reason"]) == (False, "response_mismatch")
    assert document["steps"][7]["result"] == "FAIL (response_mismatch)"


def test_another_policy_refuses_the_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('mrtd = ["' + "00" * 48 + '"]\n')
    args = _args(WHOLE)
    args[args.index("--policy") + 1] = str(policy)
    assert main(args) == 1
    assert "reason: mrtd_not_allowed" in capsys.readouterr().out


def test_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _args(WHOLE)
    args[2] = str(tmp_path / "missing.json")
    assert main(args) == 2
    assert "reason: input_error" in capsys.readouterr().out


def test_the_evidence_is_found_next_to_a_kept_receipt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vectors = json.loads(vector_path("receipts/receipts.json").read_text())
    (tmp_path / "receipts").mkdir()
    (tmp_path / "evidence").mkdir()
    shutil.copy(vector_path(f"receipts/{WHOLE}.json"), tmp_path / "receipts" / f"{WHOLE}.json")
    shutil.copy(
        vector_path("receipts/bundle.json"),
        tmp_path / "evidence" / f"{vectors['quote_sha256']}.json",
    )
    args = _args(WHOLE, evidence=False)
    args[2] = str(tmp_path / "receipts" / f"{WHOLE}.json")
    assert main(args) == 0, capsys.readouterr().out


def test_a_bare_certificate_needs_the_collateral(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = json.loads(vector_path("receipts/bundle.json").read_text())
    certificate = tmp_path / "certificate.pem"
    certificate.write_text(bundle["certificate_pem"])
    collateral = tmp_path / "collateral.json"
    collateral.write_text(bundle["collateral"])
    args = _args(WHOLE)
    args[args.index("--evidence") + 1] = str(certificate)
    assert main(args) == 1
    assert "reason: collateral_unavailable" in capsys.readouterr().out
    assert main([*args, "--collateral", str(collateral)]) == 0
    assert capsys.readouterr().out.startswith("verified: yes")
