"""Signed policies: a release's measurement policy, checked before a client pins it.

A release publishes its policy file (TOML, :mod:`attestation.policy`) with a Sigstore bundle
(v0.3, DSSE envelope) of an in-toto Statement v1 about it, signed keyless from the project's
release workflow and logged in Rekor::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "policy.toml", "digest": {"sha256": "<hex of the file's bytes>"}}],
     "predicateType": "urn:enclave:attestation:policy:v1",
     "predicate": {"version": 7,
                   "image": {"rtmr1": ["<hex>"], "rtmr2": ["<hex>"], ...},
                   "vm_shape": {"mrtd": ["<hex>"], "rtmr0": ["<hex>"], ...}}}

:func:`verify_statement_bundle` verifies a bundle offline against a Sigstore trusted root
(``trusted_root.json``, no network) and returns the statement, in this order; each refusal
is a :class:`~attestation.errors.VerificationError` with its own :class:`BundleReason`:

1. the bundle is a v0.3 bundle with a DSSE envelope and one Rekor entry carrying an
   inclusion proof with a checkpoint (``policy_bundle_malformed``, ``policy_bundle_unlogged``);
2. the signing certificate chains to the trusted root's Fulcio CA at the log's integration
   time and carries a valid SCT (``policy_bundle_certificate``);
3. its identity is the release workflow at a tag on a GitHub-hosted runner
   (:class:`ReleaseIdentity`, ``policy_bundle_identity``);
4. the inclusion proof, the checkpoint and the signed entry timestamp verify against the
   trusted root's Rekor keys, and the entry is this envelope (``policy_bundle_unlogged``);
5. the DSSE signature verifies with the certificate's key (``policy_bundle_signature``);
6. the payload is an in-toto Statement v1 with no unknown fields
   (``policy_bundle_statement``), of the expected predicate type
   (``policy_bundle_predicate_type``), whose only subject is the SHA-256 of the given bytes
   (``policy_bundle_subject_mismatch``).

Steps 2-5 are sigstore-python's ``Verifier.verify_dsse``; its errors are sorted into the
reasons above by the step that raised them. :func:`verify_policy_bundle` adds the project's
predicate: a version (a positive integer) and the image and VM-shape values, which must be
exactly the policy file's allow-lists (``policy_bundle_predicate_mismatch``).
:func:`check_version` refuses a version below the highest one the client has seen, or the
same version for other bytes (``policy_bundle_rollback``). The file handling (reading the
files, the version state next to the pinned policy) is :mod:`attestation.policy_bundle_files`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Final

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from attestation.errors import PolicyError, VerificationError
from attestation.policy import Policy

if TYPE_CHECKING:  # sigstore takes about a second to import: only when a bundle is checked
    from sigstore.models import Bundle, TrustedRoot

__all__ = [
    "GITHUB_ISSUER",
    "IMAGE_REGISTERS",
    "POLICY_PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "VM_SHAPE_REGISTERS",
    "BundleReason",
    "ReleaseIdentity",
    "SignedPolicy",
    "check_predicate",
    "check_version",
    "parse_statement",
    "policy_predicate",
    "policy_statement",
    "verify_policy_bundle",
    "verify_statement_bundle",
]

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
BUNDLE_V03: Final = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
#: The project's predicate type (a URN: the project has no canonical web address).
POLICY_PREDICATE_TYPE: Final = "urn:enclave:attestation:policy:v1"
GITHUB_ISSUER: Final = "https://token.actions.githubusercontent.com"
#: The registers each half of the predicate may hold: the image (kernel, initrd, command line,
#: the service) and the VM shape (firmware, its configuration, CPUs, memory, ACPI tables).
IMAGE_REGISTERS: Final = ("rtmr1", "rtmr2", "rtmr3", "mrconfigid")
VM_SHAPE_REGISTERS: Final = ("mrtd", "rtmr0")
MAX_BUNDLE_BYTES: Final = 1 << 20
MAX_VERSION: Final = (1 << 53) - 1

_ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_BUILD_SIGNER_URI_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.9")
_RUNNER_ENVIRONMENT_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.11")
_SOURCE_REPOSITORY_URI_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.12")
_SOURCE_REPOSITORY_REF_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.14")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_TAG_REF = re.compile(r"refs/tags/v[0-9A-Za-z._+-]+")


class BundleReason(StrEnum):
    """Stable reason codes of a refused policy bundle (docs/client.md lists them)."""

    MALFORMED = "policy_bundle_malformed"
    UNLOGGED = "policy_bundle_unlogged"
    CERTIFICATE = "policy_bundle_certificate"
    IDENTITY = "policy_bundle_identity"
    SIGNATURE = "policy_bundle_signature"
    STATEMENT = "policy_bundle_statement"
    PREDICATE_TYPE = "policy_bundle_predicate_type"
    SUBJECT_MISMATCH = "policy_bundle_subject_mismatch"
    PREDICATE_MISMATCH = "policy_bundle_predicate_mismatch"
    ROLLBACK = "policy_bundle_rollback"

    #: Every code (derived from the members, never typed by hand).
    ALL: ClassVar[frozenset[str]]


BundleReason.ALL = frozenset(BundleReason)


@dataclass(frozen=True, slots=True)
class ReleaseIdentity:
    """Who may sign: ``workflow`` of GitHub repository ``repository`` (``owner/name``), run for
    a tag ``refs/tags/v*`` on a GitHub-hosted runner, with GitHub's OIDC issuer."""

    repository: str
    workflow: str = ".github/workflows/release.yml"

    def __post_init__(self) -> None:
        if not _REPOSITORY.fullmatch(self.repository):
            raise PolicyError(f"release repository must be OWNER/NAME, not {self.repository!r}")
        if not re.fullmatch(r"\.github/workflows/[A-Za-z0-9_.-]+\.ya?ml", self.workflow):
            raise PolicyError(
                f"release workflow must be .github/workflows/FILE.yml: {self.workflow!r}"
            )

    @property
    def repository_uri(self) -> str:
        return f"https://github.com/{self.repository}"

    def check(self, cert: x509.Certificate) -> str:
        """The tag ref ``cert`` was issued for; ``VerificationError`` if it is not this identity."""
        if _utf8_extension(cert, _ISSUER_OID) != GITHUB_ISSUER:
            raise _identity("the certificate's OIDC issuer is not GitHub Actions")
        if _utf8_extension(cert, _RUNNER_ENVIRONMENT_OID) != "github-hosted":
            raise _identity("the workflow did not run on a GitHub-hosted runner")
        if _utf8_extension(cert, _SOURCE_REPOSITORY_URI_OID) != self.repository_uri:
            raise _identity(f"the source repository is not {self.repository_uri}")
        ref = _utf8_extension(cert, _SOURCE_REPOSITORY_REF_OID)
        if ref is None or not _TAG_REF.fullmatch(ref):
            raise _identity("the workflow did not run for a release tag refs/tags/v*")
        expected = f"{self.repository_uri}/{self.workflow}@{ref}"
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise _identity("the certificate has no subject alternative name") from None
        if names.get_values_for_type(x509.UniformResourceIdentifier) != [expected]:
            raise _identity(f"the certificate's identity is not {expected}")
        if _utf8_extension(cert, _BUILD_SIGNER_URI_OID) != expected:
            raise _identity(f"the build signer is not {expected}")
        return ref


@dataclass(frozen=True, slots=True)
class SignedPolicy:
    """A policy whose bundle verified: the policy, its version, the tag it was released at."""

    policy: Policy
    version: int
    subject_sha256: bytes
    release_ref: str


class _IdentityRefusedError(Exception):
    """Raised from inside sigstore's verification (its policy step) and caught around it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _identity(detail: str) -> _IdentityRefusedError:
    return _IdentityRefusedError(detail)


def _utf8_extension(cert: x509.Certificate, oid: ObjectIdentifier) -> str | None:
    """A Fulcio extension's value: DER UTF8String (tag 0x0c, short or long length)."""
    try:
        ext = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    raw = getattr(ext, "value", b"")
    if len(raw) < 2 or raw[0] != 0x0C:
        return None
    length, start = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    value = raw[start:]
    if len(value) != length:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _IdentityPolicy:
    """sigstore's ``VerificationPolicy`` seam: runs :meth:`ReleaseIdentity.check` in step 3."""

    def __init__(self, identity: ReleaseIdentity) -> None:
        self.identity = identity
        self.ref = ""

    def verify(self, cert: x509.Certificate) -> None:
        self.ref = self.identity.check(cert)


def _refuse(reason: str, detail: str) -> VerificationError:
    return VerificationError(reason, detail)


def _parse_bundle(data: bytes) -> Bundle:
    """Step 1: the shape sigstore's own checks take for granted, then sigstore's parser."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle

    if len(data) > MAX_BUNDLE_BYTES:
        raise _refuse(BundleReason.MALFORMED, f"larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(BundleReason.MALFORMED, f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("mediaType") not in BUNDLE_V03:
        raise _refuse(BundleReason.MALFORMED, "not a Sigstore bundle v0.3")
    if not isinstance(document.get("dsseEnvelope"), dict):
        raise _refuse(BundleReason.MALFORMED, "the bundle holds no DSSE envelope")
    material = document.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise _refuse(BundleReason.UNLOGGED, "the bundle holds no transparency log entry")
    proof = entries[0].get("inclusionProof")
    if not isinstance(proof, dict) or not isinstance(proof.get("checkpoint"), dict):
        raise _refuse(
            BundleReason.UNLOGGED, "the log entry has no inclusion proof with a checkpoint"
        )
    try:
        return Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise _refuse(BundleReason.MALFORMED, str(exc)) from exc


def _sigstore_reason(message: str) -> str:
    """Which of steps 2-5 raised ``message`` (sigstore-python 4.x's own wording)."""
    if message.startswith(("DSSE:", "cannot perform DSSE")):
        return BundleReason.SIGNATURE
    if message.startswith(("invalid log entry", "SET:")) or "log entry" in message:
        return BundleReason.UNLOGGED
    return BundleReason.CERTIFICATE


def verify_statement_bundle(
    bundle_json: bytes,
    subject: bytes,
    *,
    trusted_root: TrustedRoot,
    identity: ReleaseIdentity,
    predicate_type: str = POLICY_PREDICATE_TYPE,
) -> tuple[dict[str, object], str]:
    """Verify ``bundle_json`` about ``subject`` (steps 1-6 of the module doc); return the
    statement and the release tag ref it was signed at."""
    from sigstore.errors import VerificationError as SigstoreVerificationError
    from sigstore.verify import Verifier

    bundle = _parse_bundle(bundle_json)
    checker = _IdentityPolicy(identity)
    try:
        payload_type, payload = Verifier(trusted_root=trusted_root).verify_dsse(bundle, checker)
    except _IdentityRefusedError as exc:
        raise _refuse(BundleReason.IDENTITY, exc.detail) from None
    except SigstoreVerificationError as exc:
        raise _refuse(_sigstore_reason(str(exc)), str(exc)) from exc
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise _refuse(BundleReason.STATEMENT, f"payload type {payload_type!r}")
    statement = parse_statement(payload)
    if statement["predicateType"] != predicate_type:
        raise _refuse(
            BundleReason.PREDICATE_TYPE,
            f"predicate type {statement['predicateType']!r}, expected {predicate_type!r}",
        )
    _check_subject(statement["subject"], hashlib.sha256(subject).hexdigest())
    return statement, checker.ref


def parse_statement(payload: bytes) -> dict[str, object]:
    """Step 6: an in-toto Statement v1 with exactly its four fields."""
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(BundleReason.STATEMENT, f"the payload is not JSON: {exc}") from exc
    if not isinstance(statement, dict):
        raise _refuse(BundleReason.STATEMENT, "the statement is not an object")
    fields = {"_type", "subject", "predicateType", "predicate"}
    if set(statement) != fields:
        unknown, missing = sorted(set(statement) - fields), sorted(fields - set(statement))
        raise _refuse(BundleReason.STATEMENT, f"unknown fields {unknown}, missing {missing}")
    if statement["_type"] != STATEMENT_TYPE:
        raise _refuse(BundleReason.STATEMENT, f"_type {statement['_type']!r}")
    if not isinstance(statement["predicateType"], str):
        raise _refuse(BundleReason.STATEMENT, "predicateType is not a string")
    return statement


def _check_subject(subjects: object, sha256_hex: str) -> None:
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise _refuse(BundleReason.STATEMENT, "the statement must have exactly one subject")
    item = subjects[0]
    if set(item) != {"name", "digest"} or not isinstance(item["name"], str):
        raise _refuse(BundleReason.STATEMENT, "a subject has exactly a name and a digest")
    digest = item["digest"]
    if not isinstance(digest, dict) or set(digest) != {"sha256"}:
        raise _refuse(BundleReason.STATEMENT, "the subject's digest must be exactly sha256")
    if digest["sha256"] != sha256_hex:
        raise _refuse(
            BundleReason.SUBJECT_MISMATCH,
            f"the statement is about sha256 {digest['sha256']}, the file is {sha256_hex}",
        )


def verify_policy_bundle(
    policy_bytes: bytes,
    policy: Policy,
    bundle_json: bytes,
    *,
    trusted_root: TrustedRoot,
    identity: ReleaseIdentity,
) -> SignedPolicy:
    """Verify the bundle of the policy file ``policy_bytes`` (parsed: ``policy``) and the
    project predicate: its version and its values, exactly the policy's allow-lists."""
    statement, ref = verify_statement_bundle(
        bundle_json, policy_bytes, trusted_root=trusted_root, identity=identity
    )
    version = check_predicate(statement["predicate"], policy)
    return SignedPolicy(policy, version, hashlib.sha256(policy_bytes).digest(), ref)


def check_predicate(predicate: object, policy: Policy) -> int:
    """The project predicate's version; refuse it unless its values are ``policy``'s."""
    if not isinstance(predicate, dict) or set(predicate) != {"version", "image", "vm_shape"}:
        raise _refuse(BundleReason.STATEMENT, "the predicate has exactly version, image, vm_shape")
    version = predicate["version"]
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        raise _refuse(BundleReason.STATEMENT, "the predicate's version is a positive integer")
    for half, allowed in (("image", IMAGE_REGISTERS), ("vm_shape", VM_SHAPE_REGISTERS)):
        values = predicate[half]
        if not isinstance(values, dict) or not set(values) <= set(allowed):
            raise _refuse(BundleReason.STATEMENT, f"predicate {half}: registers of {allowed}")
        for name in allowed:
            stated = _hex_set(values.get(name), f"{half}.{name}")
            if stated != getattr(policy, name):
                raise _refuse(
                    BundleReason.PREDICATE_MISMATCH,
                    f"the predicate's {name} is not the policy file's {name} allow-list",
                )
    return version


def _hex_set(value: object, where: str) -> frozenset[bytes] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _refuse(BundleReason.STATEMENT, f"predicate {where}: a list of hex strings")
    try:
        return frozenset(bytes.fromhex(item) for item in value)
    except ValueError as exc:
        raise _refuse(BundleReason.STATEMENT, f"predicate {where}: {exc}") from exc


def policy_predicate(policy: Policy, version: int) -> dict[str, object]:
    """The project predicate for ``policy`` at ``version`` (what a release signs)."""
    if type(version) is not int or not 0 < version <= MAX_VERSION:
        raise PolicyError(f"a policy version is an integer from 1 to {MAX_VERSION}")

    def half(names: tuple[str, ...]) -> dict[str, list[str]]:
        return {
            name: sorted(value.hex() for value in getattr(policy, name))
            for name in names
            if getattr(policy, name) is not None
        }

    return {
        "version": version,
        "image": half(IMAGE_REGISTERS),
        "vm_shape": half(VM_SHAPE_REGISTERS),
    }


def policy_statement(policy_bytes: bytes, policy: Policy, name: str, version: int) -> bytes:
    """The in-toto statement a release signs for the policy file ``name`` (its bytes, parsed:
    ``policy``), canonical JSON (sorted keys, no spaces)."""
    if not policy.pins_measurements:
        raise PolicyError("a released policy pins " + ", ".join(policy.unpinned))
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": hashlib.sha256(policy_bytes).hexdigest()}}],
        "predicateType": POLICY_PREDICATE_TYPE,
        "predicate": policy_predicate(policy, version),
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def check_version(signed: SignedPolicy, seen: Mapping[str, object] | None) -> None:
    """Refuse ``signed`` if the client has seen a higher version, or this version for other
    bytes (``seen``: the stored ``{"version": int, "sha256": hex}``, None for none yet)."""
    if seen is None:
        return
    version, digest = seen.get("version"), seen.get("sha256")
    if type(version) is not int or not isinstance(digest, str):
        raise PolicyError("the stored policy version is not {version, sha256}")
    if signed.version < version:
        raise _refuse(
            BundleReason.ROLLBACK,
            f"policy version {signed.version} is older than version {version}, already seen",
        )
    if signed.version == version and digest != signed.subject_sha256.hex():
        raise _refuse(
            BundleReason.ROLLBACK,
            f"policy version {version} was already seen with other contents",
        )
