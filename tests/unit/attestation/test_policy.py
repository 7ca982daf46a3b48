"""Policy files: TOML and JSON, defaults, and clear errors for invalid files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from attestation.errors import PolicyError
from attestation.policy import DEFAULT_POLICY, Policy, load_policy, policy_from_mapping

MRTD = "ab" * 48
RTMR = "0x" + "cd" * 48


def test_defaults_are_strict() -> None:
    assert DEFAULT_POLICY.allowed_tcb_statuses == frozenset({"UpToDate"})
    assert DEFAULT_POLICY.allowed_advisory_ids == frozenset()
    assert DEFAULT_POLICY.mrtd is None
    assert not DEFAULT_POLICY.insecure_allow_debug
    assert DEFAULT_POLICY.require_enclave_claims
    assert not DEFAULT_POLICY.require_nonce


def test_toml_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        f"""
allowed_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
allowed_advisory_ids = ["INTEL-SA-00615"]
mrtd = ["{MRTD}"]
rtmr2 = ["{RTMR}"]
mrconfigid = ["{"00" * 48}"]
allowed_model_digests = ["{"11" * 32}"]
require_nonce = true
require_model = true
"""
    )
    policy = load_policy(path)
    assert policy.allowed_tcb_statuses == {"UpToDate", "SWHardeningNeeded"}
    assert policy.allowed_advisory_ids == {"INTEL-SA-00615"}
    assert policy.mrtd == frozenset({bytes.fromhex(MRTD)})
    assert policy.rtmrs == (None, None, frozenset({bytes.fromhex(RTMR[2:])}), None)
    assert policy.mrconfigid == frozenset({bytes(48)})
    assert policy.allowed_model_digests == frozenset({b"\x11" * 32})
    assert policy.require_nonce
    assert policy.require_model


def test_json_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"mrtd": [MRTD], "require_enclave_claims": False}))
    policy = load_policy(path)
    assert policy.mrtd == frozenset({bytes.fromhex(MRTD)})
    assert not policy.require_enclave_claims


def test_insecure_debug_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        policy = policy_from_mapping({"insecure_allow_debug": True})
    assert policy.insecure_allow_debug
    assert "INSECURE" in caplog.text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mrtdd": [MRTD]}, "unknown key"),
        ({"mrtd": MRTD}, "list of strings"),
        ({"mrtd": []}, "must not be empty"),
        ({"mrtd": ["ab" * 47]}, "48 bytes"),
        ({"mrtd": ["zz" * 48]}, "hex"),
        ({"mrtd": ["abc"]}, "hex"),
        ({"mrtd": ["ab " * 48]}, "hex"),
        ({"allowed_tcb_statuses": ["Revoked"]}, "forbidden"),
        ({"allowed_tcb_statuses": ["uptodate"]}, "unknown"),
        ({"allowed_tcb_statuses": []}, "at least one"),
        ({"require_nonce": "yes"}, "true or false"),
        ({"allowed_model_digests": []}, "allowed_model_digests"),
        ({"allowed_model_digests": ["00" * 65]}, "allowed_model_digests"),
    ],
)
def test_invalid_policies_raise_policy_error(data: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy_from_mapping(data)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.toml", "mrtd = [", "not valid .toml"),
        ("p.json", "{", "not valid .json"),
        ("p.json", "[1, 2]", "top level"),
        ("p.toml", 'mrtd = ["00"]', "p.toml: mrtd"),
    ],
)
def test_invalid_files_name_the_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Policy().require_nonce = True  # type: ignore[misc]
