"""Policy files: TOML and JSON, defaults, and clear errors for invalid files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from attestation.errors import PolicyError
from attestation.gpu import GpuPolicy
from attestation.policy import (
    _PARSERS,
    _WRITERS,
    DEFAULT_POLICY,
    MEASUREMENT_KEYS,
    Policy,
    load_policy,
    pinned_policy,
    policy_from_mapping,
    policy_to_mapping,
    policy_to_toml,
    unpinned_message,
)

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


def test_insecure_flags_are_named_not_warned_at_load() -> None:
    """The warning comes on every verification (test_verify), not once at load."""
    policy = policy_from_mapping({"insecure_allow_debug": True, "insecure_any_measurement": True})
    assert policy.insecure_options == ("insecure_allow_debug", "insecure_any_measurement")
    assert not policy.pins_measurements


def test_pinning_needs_mrtd_and_rtmr0_to_2() -> None:
    assert DEFAULT_POLICY.unpinned == ("mrtd", "rtmr0", "rtmr1", "rtmr2")
    value = frozenset({bytes(48)})
    partial = Policy(mrtd=value, rtmr1=value, rtmr2=value)
    assert partial.unpinned == ("rtmr0",)
    assert not partial.pins_measurements
    assert Policy(mrtd=value, rtmr0=value, rtmr1=value, rtmr2=value).pins_measurements
    assert "enclave verify URL --save-policy" in unpinned_message(partial)
    assert "rtmr0" in unpinned_message(partial)


def test_insecure_any_measurement_contradicts_allow_lists() -> None:
    with pytest.raises(PolicyError, match="contradicts"):
        Policy(mrtd=frozenset({bytes(48)}), insecure_any_measurement=True)


def test_several_values_and_a_note_round_trip_through_toml(tmp_path: Path) -> None:
    """A rolling upgrade: two images allowed side by side, and a note for humans."""
    old, new = bytes.fromhex(MRTD), bytes.fromhex(RTMR[2:])
    policy = pinned_policy(
        {"mrtd": old, "rtmr0": old, "rtmr1": old, "rtmr2": old}, note='upgrade "A" -> B'
    )
    policy = dataclasses.replace(policy, rtmr2=frozenset({old, new}))
    path = tmp_path / "policy.toml"
    path.write_text(policy_to_toml(policy, header="written by a test\nsecond line"))
    text = path.read_text()
    assert text.startswith("# written by a test\n# second line\n")
    assert load_policy(path) == policy
    assert load_policy(path).rtmr2 == {old, new}
    assert load_policy(path).note == 'upgrade "A" -> B'
    json_path = tmp_path / "policy.json"
    json_path.write_text(json.dumps(policy_to_mapping(policy)))
    assert load_policy(json_path) == policy


def test_every_policy_field_can_be_read_and_written() -> None:
    """The extension rule of attestation.policy: a field, a parser and a writer."""
    names = {item.name for item in dataclasses.fields(Policy)}
    assert set(_PARSERS) == names
    assert set(_WRITERS) == names
    full = Policy(
        allowed_tcb_statuses=frozenset({"UpToDate", "OutOfDate"}),
        allowed_advisory_ids=frozenset({"INTEL-SA-1"}),
        **{name: frozenset({bytes([i]) * 48}) for i, name in enumerate(MEASUREMENT_KEYS)},
        allowed_model_digests=frozenset({b"\x01" * 32}),
        require_model=True,
        require_nonce=True,
        require_enclave_claims=False,
        insecure_allow_debug=True,
        insecure_accept_service=frozenset({"insecure_dev_engine"}),
        note="all of it",
        gpu=GpuPolicy(
            required_count=2,
            architectures=frozenset({"hopper"}),
            min_driver_version="550.90.07",
            min_vbios_version="96.00.9f.00.01",
            measurements={2: frozenset({b"\x02" * 48})},
            insecure_allow_devtools=True,
        ),
    )
    assert set(policy_to_mapping(full)) == names - {"insecure_any_measurement"}
    assert policy_from_mapping(policy_to_mapping(full)) == full


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
        ({"note": 3}, "note must be a string"),
        ({"note": "x" * 5000}, "at most"),
        ({"insecure_any_measurement": 1}, "true or false"),
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
