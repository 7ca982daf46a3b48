"""Policy bundles (attestation.policy_bundle) against a real public Sigstore bundle.

The bundle (tests/vectors/sigstore/README.md): an in-toto Statement v1 in a DSSE envelope,
Sigstore bundle v0.3, signed keyless by trailofbits/pypi-attestation-models'
``.github/workflows/release.yml`` at ``refs/tags/v0.0.4a2`` on a GitHub-hosted runner and
logged in the public Rekor, about the release's sdist (the subject file, also copied). It
verifies offline against the public-good trusted root; each mutation below is refused with
its own reason. Its predicate type is PyPI's, so it stands in for the project's own.
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import PolicyError, VerificationError
from attestation.policy_bundle import (
    BundleReason,
    ReleaseIdentity,
    _IdentityRefusedError,
    verify_statement_bundle,
)
from attestation.policy_bundle_files import load_trusted_root
from tests.vectors import load_bytes, load_json, vector_path

BUNDLE = "sigstore/pypi_attestation_models-0.0.4a2.tar.gz.sigstore"
SUBJECT = "sigstore/pypi_attestation_models-0.0.4a2.tar.gz"
PYPI_PUBLISH = "https://docs.pypi.org/attestations/publish/v1"
SIGNER = ReleaseIdentity("trailofbits/pypi-attestation-models")


@pytest.fixture(scope="module")
def root() -> Any:
    return load_trusted_root(vector_path("sigstore/trusted_root.json"))


def _verify(bundle: bytes, root: Any, **kwargs: Any) -> tuple[dict[str, object], str]:
    options: dict[str, Any] = {"identity": SIGNER, "predicate_type": PYPI_PUBLISH, **kwargs}
    subject = options.pop("subject", load_bytes(SUBJECT))
    return verify_statement_bundle(bundle, subject, trusted_root=root, **options)


def _mutated(change: Any) -> bytes:
    document = copy.deepcopy(load_json(BUNDLE))
    change(document)
    return json.dumps(document).encode()


def _refused(bundle: bytes, root: Any, **kwargs: Any) -> str:
    with pytest.raises(VerificationError) as caught:
        _verify(bundle, root, **kwargs)
    assert caught.value.reason in BundleReason.ALL
    return caught.value.reason


def _entry(document: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = document["verificationMaterial"]["tlogEntries"][0]
    return entry


def _flip_b64(text: str, index: int = 10) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_the_real_bundle_verifies_for_its_release_identity_and_statement(root: Any) -> None:
    statement, ref = _verify(load_bytes(BUNDLE), root)
    assert ref == "refs/tags/v0.0.4a2"
    assert statement["predicateType"] == PYPI_PUBLISH
    assert statement["subject"] == [
        {
            "name": "pypi_attestation_models-0.0.4a2.tar.gz",
            "digest": {
                "sha256": "c9709ce6fd5b67b59b4a28758cf14d3f411803c4b89b6068b1f1a8e4ee94c8ef"
            },
        }
    ]


def _restatement(document: dict[str, Any]) -> None:
    envelope = document["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["name"] = "another.tar.gz"
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _no_proof(document: dict[str, Any]) -> None:
    del _entry(document)["inclusionProof"]


def _no_entries(document: dict[str, Any]) -> None:
    document["verificationMaterial"]["tlogEntries"] = []


def _proof_hash(document: dict[str, Any]) -> None:
    hashes = _entry(document)["inclusionProof"]["hashes"]
    hashes[3] = _flip_b64(hashes[3], 0)


def _proof_index(document: dict[str, Any]) -> None:
    proof = _entry(document)["inclusionProof"]
    proof["logIndex"] = str(int(proof["logIndex"]) + 1)


def _checkpoint_signature(document: dict[str, Any]) -> None:
    checkpoint = _entry(document)["inclusionProof"]["checkpoint"]
    head, signature = checkpoint["envelope"].rstrip("\n").rsplit(" ", 1)
    checkpoint["envelope"] = f"{head} {_flip_b64(signature, 12)}\n"


def _set_signature(document: dict[str, Any]) -> None:
    promise = _entry(document)["inclusionPromise"]
    promise["signedEntryTimestamp"] = _flip_b64(promise["signedEntryTimestamp"])


def _integrated_time(document: dict[str, Any]) -> None:
    entry = _entry(document)
    entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)


def _entry_body(document: dict[str, Any]) -> None:
    entry = _entry(document)
    body = json.loads(base64.b64decode(entry["canonicalizedBody"]))
    body["spec"]["payloadHash"]["value"] = "00" * 32
    entry["canonicalizedBody"] = base64.b64encode(json.dumps(body).encode()).decode()


def _signature(document: dict[str, Any]) -> None:
    signature = document["dsseEnvelope"]["signatures"][0]
    signature["sig"] = _flip_b64(signature["sig"], 20)


def _certificate(document: dict[str, Any]) -> None:
    certificate = document["verificationMaterial"]["certificate"]
    certificate["rawBytes"] = _flip_b64(certificate["rawBytes"], 400)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_restatement, BundleReason.SIGNATURE),
        (_signature, BundleReason.SIGNATURE),
        (_no_proof, BundleReason.UNLOGGED),
        (_no_entries, BundleReason.UNLOGGED),
        (_proof_hash, BundleReason.UNLOGGED),
        (_proof_index, BundleReason.UNLOGGED),
        (_checkpoint_signature, BundleReason.UNLOGGED),
        (_set_signature, BundleReason.UNLOGGED),
        (_integrated_time, BundleReason.UNLOGGED),
        (_entry_body, BundleReason.UNLOGGED),
        (_certificate, BundleReason.CERTIFICATE),
    ],
    ids=lambda value: getattr(value, "__name__", value).lstrip("_"),
)
def test_a_tampered_bundle_is_refused_with_its_reason(root: Any, change: Any, reason: str) -> None:
    assert _refused(_mutated(change), root) == reason


@pytest.mark.parametrize(
    "identity",
    [
        ReleaseIdentity("trailofbits/pypi-attestations"),
        ReleaseIdentity("trailofbits/pypi-attestation-models", ".github/workflows/ci.yml"),
        ReleaseIdentity("attacker/pypi-attestation-models"),
    ],
    ids=["other-repository", "other-workflow", "other-owner"],
)
def test_a_foreign_identity_is_refused(root: Any, identity: ReleaseIdentity) -> None:
    assert _refused(load_bytes(BUNDLE), root, identity=identity) == BundleReason.IDENTITY


def _root_file(tmp_path: Path, document: object) -> Any:
    path = tmp_path / "trusted_root.json"
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    return load_trusted_root(path)


def test_a_bundle_from_another_sigstore_instance_is_refused(tmp_path: Path) -> None:
    """The same bundle against a trusted root whose Fulcio CA is not the one that signed."""
    document = load_json("sigstore/trusted_root.json")
    document["certificateAuthorities"] = document["certificateAuthorities"][:1]  # 2021-2022 CA
    other = _root_file(tmp_path, document)
    assert _refused(load_bytes(BUNDLE), other) == BundleReason.CERTIFICATE


def test_a_trusted_root_without_the_log_key_leaves_the_bundle_unlogged(tmp_path: Path) -> None:
    document = load_json("sigstore/trusted_root.json")
    document["tlogs"] = document["tlogs"][1:]  # only the 2025 log shard
    other = _root_file(tmp_path, document)
    assert _refused(load_bytes(BUNDLE), other) == BundleReason.UNLOGGED


def test_the_wrong_predicate_type_is_refused(root: Any) -> None:
    reason = _refused(load_bytes(BUNDLE), root, predicate_type="urn:enclave:attestation:policy:v1")
    assert reason == BundleReason.PREDICATE_TYPE


def test_a_statement_about_other_bytes_is_refused(root: Any) -> None:
    reason = _refused(load_bytes(BUNDLE), root, subject=load_bytes(SUBJECT) + b"\0")
    assert reason == BundleReason.SUBJECT_MISMATCH


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle+json;version=0.1"),
        lambda d: d.pop("dsseEnvelope"),
        lambda d: d.update(verificationMaterial=[]),
    ],
    ids=["bundle-v0.1", "no-envelope", "no-material"],
)
def test_a_malformed_bundle_is_refused(root: Any, change: Any) -> None:
    assert _refused(_mutated(change), root) in {BundleReason.MALFORMED, BundleReason.UNLOGGED}
    assert _refused(b"{not json", root) == BundleReason.MALFORMED


@pytest.mark.parametrize("content", [b'{"mediaType": "text/plain"}', b"\xff", b"[]"])
def test_a_trusted_root_that_is_not_one_is_a_policy_error(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(PolicyError):
        _root_file(tmp_path, content)
    with pytest.raises(PolicyError):
        load_trusted_root(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("repository", "workflow"),
    [("no-slash", ".github/workflows/release.yml"), ("a/b", "release.yml"), ("a/b/c", "x")],
)
def test_a_release_identity_is_checked_when_configured(repository: str, workflow: str) -> None:
    with pytest.raises(PolicyError):
        ReleaseIdentity(repository, workflow)


def test_a_real_bundle_of_a_person_is_refused_for_its_identity(root: Any) -> None:
    """rfc8785 0.1.2, signed on Sigstore's staging instance by an e-mail identity (GitHub's
    OAuth): against the staging root it verifies up to the identity, which is refused; against
    the public-good root its certificate does not chain."""
    bundle = load_bytes("sigstore/rfc8785-0.1.2-py3-none-any.whl.sigstore")
    subject = load_bytes("sigstore/rfc8785-0.1.2-py3-none-any.whl")
    identity = ReleaseIdentity("trailofbits/rfc8785.py")
    staging = load_trusted_root(vector_path("sigstore/trusted_root.staging.json"))
    reason = _refused(bundle, staging, subject=subject, identity=identity)
    assert reason == BundleReason.IDENTITY
    reason = _refused(bundle, root, subject=subject, identity=identity)
    assert reason == BundleReason.CERTIFICATE


def _real_certificate(relative: str) -> x509.Certificate:
    material = load_json(relative)["verificationMaterial"]
    raw = material.get("certificate") or material["x509CertificateChain"]["certificates"][0]
    return x509.load_der_x509_certificate(base64.b64decode(raw["rawBytes"]))


def test_a_release_workflow_on_a_branch_is_not_a_release() -> None:
    """sigstore-js's release workflow, run for refs/heads/main on a GitHub-hosted runner."""
    cert = _real_certificate("sigstore/sigstore-js-1.3.0-provenance.sigstore.json")
    with pytest.raises(_IdentityRefusedError, match="release tag"):
        ReleaseIdentity("sigstore/sigstore-js").check(cert)


def test_the_real_release_certificate_passes_the_identity_check() -> None:
    cert = _real_certificate(BUNDLE)
    assert SIGNER.check(cert) == "refs/tags/v0.0.4a2"


REPO = "https://github.com/owner/enclave"
GOOD = f"{REPO}/.github/workflows/release.yml@refs/tags/v1.2.0"
FIELDS = {
    "1.3.6.1.4.1.57264.1.8": "https://token.actions.githubusercontent.com",
    "1.3.6.1.4.1.57264.1.9": GOOD,
    "1.3.6.1.4.1.57264.1.11": "github-hosted",
    "1.3.6.1.4.1.57264.1.12": REPO,
    "1.3.6.1.4.1.57264.1.14": "refs/tags/v1.2.0",
}


def _utf8(text: str) -> bytes:
    raw = text.encode()
    length = bytes([len(raw)]) if len(raw) < 128 else bytes([0x81, len(raw)])
    return b"\x0c" + length + raw


def _certificate(san: str | None = GOOD, **changes: str | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(minutes=10))
    )
    if san is not None:
        names = [x509.UniformResourceIdentifier(san)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    fields = {**FIELDS, **{key.replace("_", "."): value for key, value in changes.items()}}
    for oid, value in fields.items():
        if value is not None:
            ext = x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), _utf8(value))
            builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256())


def _oid(last: int) -> str:
    return f"1_3_6_1_4_1_57264_1_{last}"


def test_the_synthetic_release_certificate_passes() -> None:
    assert ReleaseIdentity("owner/enclave").check(_certificate()) == "refs/tags/v1.2.0"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({_oid(8): "https://gitlab.com"}, "issuer"),
        ({_oid(8): None}, "issuer"),
        ({_oid(11): "self-hosted"}, "GitHub-hosted"),
        ({_oid(11): None}, "GitHub-hosted"),
        ({_oid(12): "https://github.com/owner/fork"}, "source repository"),
        ({_oid(14): "refs/heads/main"}, "release tag"),
        ({_oid(14): "refs/tags/1.2.0"}, "release tag"),
        ({_oid(14): "refs/tags/v1.2.1"}, "identity"),
        ({_oid(9): f"{REPO}/.github/workflows/other.yml@refs/tags/v1.2.0"}, "build signer"),
        ({"san": f"{REPO}/.github/workflows/other.yml@refs/tags/v1.2.0"}, "identity"),
        ({"san": None}, "subject alternative name"),
    ],
)
def test_each_identity_field_is_checked(changes: dict[str, str | None], match: str) -> None:
    san = changes.pop("san", GOOD) if "san" in changes else GOOD
    with pytest.raises(_IdentityRefusedError, match=match):
        ReleaseIdentity("owner/enclave").check(_certificate(san, **changes))
