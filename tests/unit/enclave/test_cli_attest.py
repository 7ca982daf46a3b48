"""`enclave attest`: verify-quote, inspect-cert and simulate through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.cli import main
from tests.vectors import vector_path

TDX_NOW = "1752919234"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def _verify_args(quote: Path, collateral: str = "tdx_quote", now: str = TDX_NOW) -> list[str]:
    return [
        "attest",
        "verify-quote",
        "--quote",
        str(quote),
        "--collateral",
        str(vector_path(f"tdx/{collateral}_collateral.json")),
        "--now",
        now,
    ]


def test_verify_quote_real_tdx_quote(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(_verify_args(vector_path("tdx/tdx_quote")), capsys)
    assert code == 0
    assert "verified: True" in out
    assert "status: UpToDate" in out
    assert "tee_type: 0x81" in out
    assert "quote_version: 4" in out
    assert "mrtd: 91eb2b44d141d4ec" in out
    for name in ("rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "report_data"):
        assert f"{name}: " in out


def test_verify_quote_accepts_hex_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for prefix in ("", "0x"):
        path = tmp_path / f"quote{prefix}.hex"
        path.write_text(prefix + vector_path("tdx/tdx_quote").read_bytes().hex() + "\n")
        code, out = _run([*_verify_args(path), "--json"], capsys)
        assert code == 0
        result = json.loads(out)
        assert result["verified"] is True
        assert result["advisory_ids"] == []


def test_verify_quote_failure_prints_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    args = _verify_args(vector_path("tdx/tdx_quote_outdated"), "tdx_quote_outdated", "1774003274")
    code, out = _run([*args, "--json"], capsys)
    assert code == 1
    result = json.loads(out)
    assert result["verified"] is False
    assert result["reason"] == "tcb_level_unknown"
    assert result["quote_version"] == 5


def test_verify_quote_refuses_sgx(capsys: pytest.CaptureFixture[str]) -> None:
    args = _verify_args(vector_path("tdx/sgx_quote"), "sgx_quote", "1752919277")
    code, out = _run(args, capsys)
    assert code == 1
    assert "reason: not_tdx" in out


def test_verify_quote_with_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrtd = ["{"00" * 48}"]\n')
    code, out = _run([*_verify_args(vector_path("tdx/tdx_quote")), "--policy", str(policy)], capsys)
    assert code == 1
    assert "reason: mrtd_not_allowed" in out
    policy.write_text("mrtd = [")
    code, out = _run([*_verify_args(vector_path("tdx/tdx_quote")), "--policy", str(policy)], capsys)
    assert code == 1
    assert "reason: input_error" in out


def test_verify_quote_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(_verify_args(tmp_path / "absent"), capsys)
    assert code == 1
    assert "cannot read quote" in out


def test_inspect_intel_certificate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(
        ["attest", "inspect-cert", str(vector_path("ratls/intel-sgxsdk-cert.pem")), "--json"],
        capsys,
    )
    assert code == 0
    result = json.loads(out)
    assert result["parser"] == "cryptography"
    assert result["tee"] == "SGX"
    assert result["pubkey_hash_binding"] == "holds"
    assert result["report_data_binding"] == "holds"
    assert result["claims"]["pubkey-hash"]["alg-id"] == 1


def test_inspect_gramine_certificate_uses_the_der_fallback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _run(["attest", "inspect-cert", str(vector_path("ratls/gramine-cert.pem"))], capsys)
    assert code == 0
    assert "parser: der-fallback" in out
    assert "pubkey_hash_binding: holds" in out


def test_inspect_with_wrong_collateral_reports_the_dcap_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = _run(
        [
            "attest",
            "inspect-cert",
            str(vector_path("ratls/intel-sgxsdk-cert.pem")),
            "--collateral",
            str(vector_path("tdx/sgx_quote_collateral.json")),
            "--now",
            "1752919277",
            "--json",
        ],
        capsys,
    )
    assert code == 1
    assert json.loads(out)["dcap"]["reason"] in {"cert_chain_invalid", "dcap_verification_failed"}


def test_inspect_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(b"nothing here")
    code, out = _run(["attest", "inspect-cert", str(path)], capsys)
    assert code == 1
    assert "error" in out


def test_simulate_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mrtd = "ab" * 48
    code, out = _run(["attest", "simulate", "--out", str(tmp_path), "--mrtd", mrtd], capsys)
    assert code == 0
    assert "SIMULATED" in out
    args = [
        "attest",
        "verify-quote",
        "--quote",
        str(tmp_path / "quote.bin"),
        "--collateral",
        str(tmp_path / "collateral.json"),
        "--json",
    ]
    code, out = _run([*args, "--root-ca", str(tmp_path / "root_ca.pem")], capsys)
    assert code == 0
    assert json.loads(out)["mrtd"] == mrtd
    code, out = _run([*args, "--root-ca", str(tmp_path / "root_ca.der")], capsys)
    assert code == 0
    code, out = _run(args, capsys)  # Intel's root: the simulated quote must not verify
    assert code == 1
    assert json.loads(out)["reason"] == "cert_chain_invalid"


def test_simulate_rejects_bad_measurements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attest", "simulate", "--out", str(tmp_path), "--mrtd", "abc"]) == 1
    assert main(["attest", "simulate", "--out", str(tmp_path), "--rtmr", "00" * 48]) == 1
    assert "four times" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["verify-quote", "inspect-cert", "simulate"])
def test_help_explains_each_action(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["attest", action, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert len(out) > 300


def test_attest_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attest"]) == 2
    assert "verify-quote" in capsys.readouterr().err
