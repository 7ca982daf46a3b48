"""A signed policy from files: the policy, its bundle, the trusted root, the version state.

:func:`load_signed_policy` is what ``--policy-bundle`` runs (``enclave verify``, ``enclave
proxy``, ``enclave models``) and what a library user calls instead of ``load_policy``::

    policy = load_signed_policy(
        Path("policy.toml"), Path("policy.toml.sigstore.json"),
        trusted_root=Path("trusted_root.json"), identity=ReleaseIdentity("owner/enclave"),
    ).policy

The client keeps the highest policy version it has accepted next to the pinned policy, in
``<policy file>.version.json`` (``{"version": N, "sha256": "<hex of the policy file>"}``),
written atomically after every verification that raises it; a bundle of a lower version, or of
the same version for other bytes, is refused with ``policy_bundle_rollback``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

from attestation.errors import PolicyError
from attestation.policy import MAX_POLICY_FILE, policy_from_bytes
from attestation.policy_bundle import (
    MAX_BUNDLE_BYTES,
    ReleaseIdentity,
    SignedPolicy,
    check_version,
    verify_policy_bundle,
)

if TYPE_CHECKING:
    from sigstore.models import TrustedRoot

__all__ = [
    "MAX_TRUSTED_ROOT_BYTES",
    "load_signed_policy",
    "load_trusted_root",
    "version_state_path",
]

MAX_TRUSTED_ROOT_BYTES: Final = 1 << 20
MAX_STATE_BYTES: Final = 4096


def version_state_path(policy_path: Path) -> Path:
    """Where the highest version seen for ``policy_path`` is kept."""
    return policy_path.with_name(policy_path.name + ".version.json")


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise PolicyError(f"{what} {path} is larger than {limit} bytes")
    return data


def load_trusted_root(path: Path) -> TrustedRoot:
    """A Sigstore trusted root file (``trusted_root.json``); ``PolicyError`` if it is not one."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import TrustedRoot

    _read(path, MAX_TRUSTED_ROOT_BYTES, "trusted root")  # readable, and not huge
    try:
        return TrustedRoot.from_file(str(path))
    except (OSError, ValueError, SigstoreError) as exc:
        raise PolicyError(f"{path} is not a Sigstore trusted root: {exc}") from exc


def _read_state(path: Path) -> dict[str, object] | None:
    try:
        data = _read(path, MAX_STATE_BYTES, "policy version state")
    except PolicyError:
        if not path.exists():
            return None
        raise
    try:
        state = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PolicyError(f"policy version state {path} is not JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise PolicyError(f"policy version state {path} is not an object")
    return state


def _write_state(path: Path, signed: SignedPolicy) -> None:
    text = json.dumps({"version": signed.version, "sha256": signed.subject_sha256.hex()})
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise PolicyError(f"cannot write the policy version state {path}: {exc.strerror}") from exc


def load_signed_policy(
    policy_path: Path,
    bundle_path: Path,
    *,
    trusted_root: Path,
    identity: ReleaseIdentity,
) -> SignedPolicy:
    """Load ``policy_path``, verify ``bundle_path`` about it (attestation.policy_bundle) and
    its version against the state next to it, then record the version. ``PolicyError`` for
    unusable files, ``VerificationError`` (a ``policy_bundle_*`` reason) for a refusal."""
    policy_bytes = _read(policy_path, MAX_POLICY_FILE, "policy")
    policy = policy_from_bytes(policy_bytes, policy_path)
    bundle = _read(bundle_path, MAX_BUNDLE_BYTES, "policy bundle")
    root = load_trusted_root(trusted_root)
    signed = verify_policy_bundle(
        policy_bytes, policy, bundle, trusted_root=root, identity=identity
    )
    state_path = version_state_path(policy_path)
    seen = _read_state(state_path)
    check_version(signed, seen)
    if seen is None or seen.get("version") != signed.version:
        _write_state(state_path, signed)
    return signed
