"""Signed policy releases end to end: bundles of the project's own statement, signed by a
private Sigstore instance (tests/sigstore_instance.py: keyless signing needs GitHub's OIDC,
which no machine here has), verified by sigstore-python through load_signed_policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attestation.errors import PolicyError, VerificationError
from attestation.policy import pinned_policy, policy_from_bytes, policy_to_toml
from attestation.policy_bundle import (
    POLICY_PREDICATE_TYPE,
    BundleReason,
    ReleaseIdentity,
    policy_statement,
)
from attestation.policy_bundle_files import load_signed_policy, version_state_path
from tests.sigstore_instance import SigstoreInstance, github_identity

REPOSITORY = "owner/enclave"
SIGNER = ReleaseIdentity(REPOSITORY)


def policy_text(seed: int) -> bytes:
    registers = {
        name: bytes([seed + i]) * 48 for i, name in enumerate(("mrtd", "rtmr0", "rtmr1", "rtmr2"))
    }
    return policy_to_toml(pinned_policy(registers, note=f"release {seed}")).encode()


class Release:
    """A client directory (policy, bundle, trusted root) and the instance that signs."""

    def __init__(self, tmp_path: Path) -> None:
        self.instance = SigstoreInstance()
        self.dir = tmp_path
        self.root = tmp_path / "trusted_root.json"
        self.root.write_text(json.dumps(self.instance.trusted_root()))
        self.policy = tmp_path / "policy.toml"
        self.bundle = tmp_path / "policy.toml.sigstore.json"

    def publish(
        self,
        version: int,
        seed: int = 1,
        *,
        identity: dict[str, str] | None = None,
        statement: Any = None,
    ) -> None:
        data = policy_text(seed)
        self.policy.write_bytes(data)
        if statement is None:
            policy = policy_from_bytes(data, self.policy)
            statement = policy_statement(data, policy, "policy.toml", version)
        signed = self.instance.sign_statement(statement, identity or github_identity(REPOSITORY))
        self.bundle.write_text(json.dumps(signed))

    def load(self) -> Any:
        return load_signed_policy(self.policy, self.bundle, trusted_root=self.root, identity=SIGNER)

    def refused(self) -> str:
        with pytest.raises(VerificationError) as caught:
            self.load()
        assert caught.value.reason in BundleReason.ALL
        return caught.value.reason

    def statement(self, version: int, seed: int = 1) -> dict[str, Any]:
        data = policy_text(seed)
        result: dict[str, Any] = json.loads(
            policy_statement(data, policy_from_bytes(data, self.policy), "policy.toml", version)
        )
        return result


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return Release(tmp_path)


def test_a_signed_release_verifies_and_its_version_is_kept(release: Release) -> None:
    release.publish(3)
    signed = release.load()
    assert signed.version == 3
    assert signed.release_ref == "refs/tags/v1.0.0"
    assert signed.policy.mrtd == frozenset({b"\x01" * 48})
    state = json.loads(version_state_path(release.policy).read_text())
    assert state["version"] == 3
    assert release.load().version == 3  # the same release again: fine


def test_an_older_release_is_refused_after_a_newer_one(release: Release) -> None:
    release.publish(3)
    release.load()
    release.publish(2, seed=5)
    assert release.refused() == BundleReason.ROLLBACK
    release.publish(4, seed=9)
    assert release.load().version == 4
    release.publish(3)
    assert release.refused() == BundleReason.ROLLBACK


def test_the_same_version_with_other_contents_is_refused(release: Release) -> None:
    release.publish(3)
    release.load()
    release.publish(3, seed=7)
    assert release.refused() == BundleReason.ROLLBACK


def test_a_statement_whose_values_are_not_the_policy_file_is_refused(release: Release) -> None:
    statement = release.statement(1)
    statement["predicate"]["image"]["rtmr2"] = ["ee" * 48]
    release.publish(1, statement=statement)
    assert release.refused() == BundleReason.PREDICATE_MISMATCH


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(extra=1),
        lambda s: s["predicate"].update(comment="x"),
        lambda s: s["predicate"]["image"].update(kernel=["00"]),
        lambda s: s["subject"][0].update(annotations={}),
        lambda s: s["subject"][0]["digest"].update(sha512="00"),
        lambda s: s["subject"].append(dict(s["subject"][0])),
        lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"),
        lambda s: s["predicate"].update(version=0),
        lambda s: s["predicate"].update(version="3"),
        lambda s: s["predicate"].update(version=True),
    ],
    ids=[
        "statement-field",
        "predicate-field",
        "predicate-register",
        "subject-field",
        "subject-digest",
        "two-subjects",
        "statement-v0.1",
        "version-zero",
        "version-string",
        "version-bool",
    ],
)
def test_unknown_or_malformed_statement_fields_are_refused(release: Release, change: Any) -> None:
    statement = release.statement(1)
    change(statement)
    release.publish(1, statement=statement)
    assert release.refused() == BundleReason.STATEMENT


def test_another_predicate_type_is_refused(release: Release) -> None:
    statement = release.statement(1)
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    release.publish(1, statement=statement)
    assert release.refused() == BundleReason.PREDICATE_TYPE
    assert statement["predicateType"] != POLICY_PREDICATE_TYPE


def test_a_bundle_for_another_policy_file_is_refused(release: Release) -> None:
    release.publish(1)
    release.policy.write_bytes(policy_text(2))
    assert release.refused() == BundleReason.SUBJECT_MISMATCH


@pytest.mark.parametrize(
    "identity",
    [
        github_identity(REPOSITORY, runner="self-hosted"),
        github_identity(REPOSITORY, ref="refs/heads/main"),
        github_identity(REPOSITORY, workflow=".github/workflows/ci.yml"),
        github_identity("attacker/enclave"),
    ],
    ids=["self-hosted", "branch", "other-workflow", "other-repository"],
)
def test_a_release_signed_by_another_identity_is_refused(
    release: Release, identity: dict[str, str]
) -> None:
    release.publish(1, identity=identity)
    assert release.refused() == BundleReason.IDENTITY


def test_a_release_from_another_instance_is_refused(release: Release) -> None:
    release.publish(1)
    release.root.write_text(json.dumps(SigstoreInstance().trusted_root()))
    assert release.refused() == BundleReason.CERTIFICATE


def test_an_unpinned_policy_is_not_released(release: Release) -> None:
    data = b'note = "nothing pinned"\n'
    with pytest.raises(PolicyError, match="pins"):
        policy_statement(data, policy_from_bytes(data, release.policy), "policy.toml", 1)


def test_a_broken_version_state_is_a_policy_error(release: Release) -> None:
    release.publish(1)
    version_state_path(release.policy).write_text("[]")
    with pytest.raises(PolicyError):
        release.load()
