"""``enclave serve`` with the simulated TEE and ``enclave verify`` / ``enclave models`` as a
user runs them (processes): the printed verify command works as printed; the load token comes
from LOAD_TOKEN too, and its absence is explained; ``load --wait`` prints plain progress lines
off a terminal, the final status, and the engine's reason on failure; ``--log-level`` after the
subcommand in lower case; each warning once."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server._process import LOAD_TOKEN, Serve, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
MODELS_TOML = '[models.broken]\npath = "tiny"\nextra_args = ["--dev-fail-at-start"]\n'


def enclave(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("LOAD_TOKEN", "ENCLAVE_LOAD_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "enclave", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**base, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def printed_verify_command(serve: Serve) -> list[str]:
    lines: list[str] = []

    def printed() -> bool:
        lines[:] = serve.log.read_text().splitlines()
        return any("verify this service with" in line for line in lines)

    wait_until(printed, "the verify command")
    index = next(i for i, line in enumerate(lines) if "verify this service with" in line)
    command = shlex.split(lines[index + 1])
    assert command[:2] == ["enclave", "verify"]
    return command[2:]


@pytest.fixture
def serve(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "models.toml").write_text(MODELS_TOML)
    running = Serve(tmp_path, None)
    yield running
    running.close()


def test_the_printed_verify_command_works_and_models_load_waits(serve: Serve) -> None:
    verify = printed_verify_command(serve)
    assert "--collateral" in verify
    assert "--insecure-simulated-root" in verify
    result = enclave(["verify", *verify])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification of https://127.0.0.1:" in result.stdout
    # The insecure root is used twice (certificate and report): the warning is printed once.
    assert result.stderr.count("verifying with insecure_root_ca_der") == 1

    url, options = verify[0], verify[1:]
    models = ["--url", url, *options, "--insecure-any-measurement"]
    # No token: stop before connecting, and say how to give one.
    missing = enclave(["models", "load", "tiny", *models])
    assert missing.returncode == 2
    assert "ENCLAVE_LOAD_TOKEN" in missing.stderr
    assert "LOAD_TOKEN" in missing.stderr
    assert "--token" in missing.stderr

    # LOAD_TOKEN works; --log-level after the subcommand, in lower case.
    loaded = enclave(
        ["models", "load", "tiny", "--wait", *models, "--log-level", "info"],
        LOAD_TOKEN=LOAD_TOKEN,
    )
    assert loaded.returncode == 0, loaded.stderr
    final = json.loads(loaded.stdout)
    assert final["proxy_status"] == "ready"
    assert final["loaded_model"] == "tiny"
    assert "\r" not in loaded.stderr  # not a terminal: plain lines, nothing redrawn
    assert "\x1b" not in loaded.stderr
    progress = [line for line in loaded.stderr.splitlines() if line.startswith("[")]
    assert progress
    assert progress[-1].startswith("[" + "#" * 30 + "] 100.0% ready")
    assert len(progress) == len(set(progress))
    assert loaded.stderr.count("INSECURE: trusting any measurements") <= 1
    assert LOAD_TOKEN not in loaded.stdout + loaded.stderr

    # A load that fails: the final status, and the engine's reason.
    failed = enclave(["models", "load", "broken", "--wait", *models], ENCLAVE_LOAD_TOKEN=LOAD_TOKEN)
    assert failed.returncode == 1
    final = json.loads(failed.stdout)
    assert final["proxy_status"] == "error"
    error_lines = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert error_lines == [
        f"error: the load of broken failed: {final['error']['code']}: {final['error']['message']}"
    ]

    # A refusal says what the service said.
    refused = enclave(["models", "unload", "tiny", *models], LOAD_TOKEN="wrong-" + LOAD_TOKEN)
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr

    status = enclave(["models", "status", *models, "--log-level", "DEBUG"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["proxy_status"] == "error"


def test_log_level_is_checked_with_its_choices() -> None:
    result = enclave(["models", "check", ".", "--log-level", "loud"])
    assert result.returncode == 2
    assert "DEBUG, INFO, WARNING, ERROR" in result.stderr
