#!/usr/bin/env python3
"""Sign a release's measurement policy: the in-toto statement, and its Sigstore bundle.

    deploy/release/sign-policy.py statement policy.toml --version N [--out policy.statement.json]
    deploy/release/sign-policy.py sign policy.toml --version N [--bundle policy.toml.sigstore.json]

``statement`` writes the statement a release signs (attestation.policy_bundle.policy_statement:
subject = the file's name and SHA-256, predicate type ``urn:enclave:attestation:policy:v1``,
predicate = {version, image values, VM-shape values}); it needs nothing but this repository.

``sign`` signs that statement keyless with Sigstore's public-good instance (Fulcio, Rekor;
the log entry comes with its inclusion proof and checkpoint) and writes the bundle (v0.3,
DSSE envelope). The identity is the ambient OIDC token of the CI run: in GitHub Actions
(``permissions: id-token: write``) the certificate then names the workflow, the tag and the
runner, which is what clients check (--policy-signer, --policy-workflow). It needs the
network and that token, so it runs in .github/workflows/release.yml, never on a developer's
machine or in the tests (tests/sigstore_instance.py signs with a private instance instead).
Clients then verify offline: ``enclave verify URL --policy policy.toml --policy-bundle
policy.toml.sigstore.json --policy-trusted-root trusted_root.json --policy-signer OWNER/NAME``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from attestation.errors import PolicyError
from attestation.policy import load_policy
from attestation.policy_bundle import policy_statement


def statement_bytes(policy_path: Path, version: int) -> bytes:
    data = policy_path.read_bytes()
    return policy_statement(data, load_policy(policy_path), policy_path.name, version)


def _sign(statement: bytes, bundle: Path) -> None:  # pragma: no cover - needs OIDC and network
    from sigstore.dsse import Statement
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityToken, detect_credential
    from sigstore.sign import SigningContext

    token = detect_credential()
    if token is None:
        raise PolicyError("no ambient OIDC credential (run in GitHub Actions with id-token: write)")
    context = SigningContext.from_trust_config(ClientTrustConfig.production())
    with context.signer(IdentityToken(token), cache=False) as signer:
        result = signer.sign_dsse(Statement(statement))
    bundle.write_text(result.to_json())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("statement", "sign"):
        command = sub.add_parser(name)
        command.add_argument("policy", type=Path, help="the release's policy file (TOML)")
        command.add_argument("--version", type=int, required=True, help="policy version (>= 1)")
    sub.choices["statement"].add_argument("--out", type=Path, help="default: standard output")
    sub.choices["sign"].add_argument(
        "--bundle", type=Path, help="default: <policy>.sigstore.json next to the policy"
    )
    args = parser.parse_args(argv)
    try:
        statement = statement_bytes(args.policy, args.version)
        if args.command == "statement":
            if args.out is None:
                sys.stdout.write(statement.decode() + "\n")
            else:
                args.out.write_bytes(statement)
            return 0
        _sign(statement, args.bundle or args.policy.with_name(args.policy.name + ".sigstore.json"))
    except (OSError, PolicyError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
