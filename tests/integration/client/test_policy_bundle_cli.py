"""--policy-bundle through the entry points a user runs (`enclave verify`, `enclave models`,
`enclave proxy`) against the real service: a release's policy, signed by the test Sigstore
instance (tests/sigstore_instance.py; keyless signing needs GitHub's OIDC), is verified before
it is used; an older, tampered or foreign one is refused with its reason before anything is
sent."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from attestation.policy import policy_from_bytes, policy_to_toml
from attestation.policy_bundle import policy_statement
from attestation.policy_bundle_files import version_state_path
from enclave.cli import build_parser
from enclave.cli._proxy import _run_argv, settings_from_args
from tests.integration.client.conftest import Running
from tests.integration.client.test_policy_workflow import run_cli, trust
from tests.integration.client.test_proxy_daemon import proxy
from tests.sigstore_instance import SigstoreInstance, github_identity

pytestmark = pytest.mark.asyncio(loop_scope="module")
REPOSITORY = "owner/enclave"


class Client:
    def __init__(self, running: Running, tmp: Path) -> None:
        self.running = running
        self.instance = SigstoreInstance()
        self.policy = tmp / "policy.toml"
        self.bundle = tmp / "policy.toml.sigstore.json"
        self.root = tmp / "trusted_root.json"
        self.root.write_text(json.dumps(self.instance.trusted_root()))

    def publish(
        self, version: int, identity: dict[str, str] | None = None, **changes: object
    ) -> None:
        data = policy_to_toml(self.running.policy(**changes)).encode()
        self.policy.write_bytes(data)
        statement = policy_statement(
            data, policy_from_bytes(data, self.policy), "policy.toml", version
        )
        signed = self.instance.sign_statement(statement, identity or github_identity(REPOSITORY))
        self.bundle.write_text(json.dumps(signed))

    def args(self) -> tuple[str, ...]:
        return (
            *trust(self.running),
            "--policy",
            str(self.policy),
            "--policy-bundle",
            str(self.bundle),
            "--policy-trusted-root",
            str(self.root),
            "--policy-signer",
            REPOSITORY,
        )

    async def verify(self) -> tuple[int, dict[str, object]]:
        code, out, _ = await asyncio.to_thread(
            run_cli, "verify", self.running.url, *self.args(), "--json"
        )
        return code, json.loads(out)


async def test_verify_uses_a_signed_policy_and_refuses_an_older_one(
    running: Running, tmp_path: Path
) -> None:
    client = Client(running, tmp_path)
    client.publish(5)
    code, document = await client.verify()
    assert code == 0, document
    assert document["verified"] is True
    assert document["measurements_pinned"] is True
    assert json.loads(version_state_path(client.policy).read_text())["version"] == 5
    assert document["signed_policy"]["version"] == 5
    assert document["signed_policy"]["signer"] == (
        "https://github.com/owner/enclave/.github/workflows/release.yml@refs/tags/v1.0.0"
    )
    code, out, _ = await asyncio.to_thread(run_cli, "verify", running.url, *client.args())
    assert code == 0
    assert "policy: version 5, signed by https://github.com/owner/enclave/" in out

    client.publish(4)  # an older release, genuinely signed: a rollback
    code, document = await client.verify()
    assert code == 1
    assert document["reason"] == "policy_bundle_rollback"
    assert "steps" not in document  # refused before any connection

    client.publish(6, rtmr2=frozenset({b"\x22" * 48}))  # newer, but not this service
    code, document = await client.verify()
    assert code == 1
    assert document["reason"] == "rtmr_not_allowed"


async def test_verify_refuses_a_tampered_or_foreign_bundle(
    running: Running, tmp_path: Path
) -> None:
    client = Client(running, tmp_path)
    client.publish(1)
    bundle = json.loads(client.bundle.read_text())
    signature = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    signature[-1] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    client.bundle.write_text(json.dumps(bundle))
    code, document = await client.verify()
    assert (code, document["reason"]) == (1, "policy_bundle_signature")

    client.publish(1, identity=github_identity("attacker/enclave"))
    code, document = await client.verify()
    assert (code, document["reason"]) == (1, "policy_bundle_identity")

    del bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    client.bundle.write_text(json.dumps(bundle))
    code, document = await client.verify()
    assert (code, document["reason"]) == (1, "policy_bundle_unlogged")


async def test_the_bundle_options_go_together(running: Running, tmp_path: Path) -> None:
    client = Client(running, tmp_path)
    client.publish(1)
    args = list(client.args())
    without_root = [
        a for i, a in enumerate(args) if "--policy-trusted-root" not in args[i - 1 : i + 1]
    ]
    code, out, _ = await asyncio.to_thread(run_cli, "verify", running.url, *without_root)
    assert code == 1
    assert "needs --policy-trusted-root" in out
    code, out, _ = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust(running), "--policy-signer", REPOSITORY
    )
    assert code == 1
    assert "go with --policy-bundle" in out


async def test_models_and_proxy_refuse_an_older_policy(running: Running, tmp_path: Path) -> None:
    client = Client(running, tmp_path)
    client.publish(3)
    code, _, err = await asyncio.to_thread(
        run_cli, "models", "status", "--url", running.url, *client.args()
    )
    assert code == 0, err
    client.publish(2)
    code, _, err = await asyncio.to_thread(
        run_cli, "models", "status", "--url", running.url, *client.args()
    )
    assert code == 2
    assert "policy_bundle_rollback" in err
    started = await asyncio.to_thread(
        proxy,
        "start",
        running.url,
        *client.args(),
        "--pid-file",
        str(tmp_path / "proxy.pid"),
        "--log-file",
        str(tmp_path / "proxy.log"),
    )
    assert started.returncode == 2
    assert "policy_bundle_rollback" in started.stderr
    assert not (tmp_path / "proxy.pid").exists()


async def test_proxy_start_hands_the_bundle_options_to_its_daemon(tmp_path: Path) -> None:
    argv_in = ["proxy", "start", "https://x", "--policy", str(tmp_path / "p.toml")]
    argv_in += ["--policy-bundle", str(tmp_path / "b.json")]
    argv_in += ["--policy-trusted-root", str(tmp_path / "r.json")]
    argv_in += ["--policy-signer", "owner/enclave"]
    args = build_parser().parse_args(argv_in)
    argv = _run_argv(args, settings_from_args(args))
    for flag, value in (
        ("--policy-bundle", str(tmp_path / "b.json")),
        ("--policy-trusted-root", str(tmp_path / "r.json")),
        ("--policy-signer", "owner/enclave"),
        ("--policy-workflow", ".github/workflows/release.yml"),
    ):
        assert argv[argv.index(flag) + 1] == value
