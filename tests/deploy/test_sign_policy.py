"""deploy/release/sign-policy.py: the statement a release signs is exactly what clients verify
(signed here by the test Sigstore instance; the keyless ``sign`` step needs GitHub's OIDC
token and runs only in .github/workflows/release.yml)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from attestation.policy import pinned_policy, policy_to_toml
from attestation.policy_bundle import POLICY_PREDICATE_TYPE, ReleaseIdentity
from attestation.policy_bundle_files import load_signed_policy
from tests.deploy._repo import DEPLOY, load_script
from tests.sigstore_instance import SigstoreInstance, github_identity

SCRIPT = load_script(DEPLOY / "release" / "sign-policy.py", "sign_policy")


def test_the_release_statement_verifies_as_a_signed_policy(tmp_path: Path) -> None:
    registers = {
        name: bytes([n]) * 48 for n, name in enumerate(("mrtd", "rtmr0", "rtmr1", "rtmr2"))
    }
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_to_toml(pinned_policy(registers)))
    out = tmp_path / "statement.json"
    assert SCRIPT.main(["statement", str(policy), "--version", "12", "--out", str(out)]) == 0
    statement = json.loads(out.read_bytes())
    assert statement["predicateType"] == POLICY_PREDICATE_TYPE
    assert statement["subject"] == [
        {
            "name": "policy.toml",
            "digest": {"sha256": hashlib.sha256(policy.read_bytes()).hexdigest()},
        }
    ]
    assert statement["predicate"]["vm_shape"] == {"mrtd": ["00" * 48], "rtmr0": ["01" * 48]}
    assert statement["predicate"]["image"] == {"rtmr1": ["02" * 48], "rtmr2": ["03" * 48]}
    instance = SigstoreInstance()
    root = tmp_path / "trusted_root.json"
    root.write_text(json.dumps(instance.trusted_root()))
    bundle = tmp_path / "policy.toml.sigstore.json"
    signed = instance.sign_statement(
        out.read_bytes(), github_identity("owner/enclave", "refs/tags/v2.0.0")
    )
    bundle.write_text(json.dumps(signed))
    result = load_signed_policy(
        policy, bundle, trusted_root=root, identity=ReleaseIdentity("owner/enclave")
    )
    assert (result.version, result.release_ref) == (12, "refs/tags/v2.0.0")


def test_an_unpinned_policy_or_a_bad_version_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('note = "x"\n')
    assert SCRIPT.main(["statement", str(policy), "--version", "1"]) == 2
    policy.write_text(
        policy_to_toml(
            pinned_policy(dict.fromkeys(("mrtd", "rtmr0", "rtmr1", "rtmr2"), b"\x01" * 48))
        )
    )
    assert SCRIPT.main(["statement", str(policy), "--version", "0"]) == 2
