"""Issue 20 point 12: the README's laptop section, run as a user runs it: from ``$HOME``, where
the section has just created ``~/enclave/``. The daemon child is a ``python -m enclave``; had
the working directory been on its ``sys.path``, ``~/enclave`` would shadow the package
(``ImportError: cannot import name '__version__' from 'enclave' (unknown location)``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.integration.client.conftest import Running
from tests.integration.client.test_policy_workflow import trust
from tests.integration.client.test_relay_cli_daemon import exited, socket_port

pytestmark = pytest.mark.asyncio(loop_scope="module")
ROOT = Path(__file__).resolve().parents[3]


def _enclave() -> list[str]:
    """The ``enclave`` command as installed with this interpreter (a console script: its own
    directory, not the working one, is on its sys.path); where none is installed, this
    interpreter without the working directory on sys.path, which is what it amounts to."""
    script = Path(sysconfig.get_path("scripts")) / "enclave"
    return [str(script)] if script.exists() else [sys.executable, "-P", "-m", "enclave"]


#: How ``pip install -e .`` (the README's install) makes the packages importable: a finder
#: after the path finder, not a sys.path entry, so a namespace directory named ``enclave`` on
#: sys.path is found first. Installed here for this checkout, in every Python process started
#: with PYTHONPATH=<its directory> (children included), so that the test does not depend on
#: how the environment running it was installed.
EDITABLE_FINDER = """
import importlib.machinery, importlib.util, sys

ROOT = {root!r}
PACKAGES = ("enclave", "attestation", "model_manager")


class _Editable:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name not in PACKAGES:
            return None
        where = f"{{ROOT}}/{{name}}"
        return importlib.util.spec_from_file_location(
            name, where + "/__init__.py", submodule_search_locations=[where]
        )


_at = next(i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder)
sys.meta_path.insert(_at + 1, _Editable)
"""


def _editable(tmp: Path) -> Path:
    site = tmp / "editable"
    site.mkdir()
    (site / "sitecustomize.py").write_text(EDITABLE_FINDER.format(root=str(ROOT)))
    return site


def _home(tmp: Path) -> Path:
    """A home directory after the README's first line."""
    home = tmp / "home"
    (home / "enclave" / "models" / "tiny").mkdir(parents=True)
    (home / "enclave" / "run").mkdir(parents=True)
    (home / "enclave" / "models" / "tiny" / "config.json").write_text("{}")
    return home


async def test_the_laptop_section_from_home_with_an_enclave_directory(
    running: Running, tmp_path: Path
) -> None:
    home = _home(tmp_path)
    env = {key: value for key, value in os.environ.items() if key not in ("XDG_RUNTIME_DIR",)}
    env.update({"HOME": str(home), "PYTHONPATH": str(_editable(tmp_path))})
    with socket_port() as port:
        pass

    def enclave(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_enclave(), *argv],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def scenario() -> None:
        proof = subprocess.run(  # the trap is real: from here, `python -m enclave` breaks
            [sys.executable, "-m", "enclave", "--help"],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proof.returncode != 0
        assert "ImportError" in proof.stderr
        flags = trust(running)
        verified = enclave("verify", running.url, *flags, "--save-policy", "policy.toml")
        assert verified.returncode == 0, verified.stderr
        assert (home / "policy.toml").exists()
        listen = ("--listen", f"127.0.0.1:{port}")
        started = enclave("proxy", "start", running.url, *flags, "--policy", "policy.toml", *listen)
        assert started.returncode == 0, started.stderr + _log(home)
        assert "verified" in started.stdout
        pid_file = home / ".cache" / "enclave" / "proxy.pid"
        pid = int(pid_file.read_text().split()[0])
        try:
            models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)
            assert models.status_code == 200
            assert models.headers["x-confidential-verified"] == "true"
            status = enclave("proxy", "status", "--listen", f"127.0.0.1:{port}")
            assert status.returncode == 0, status.stdout
            assert json.loads(status.stdout)["verified"] is True
        finally:
            stopped = enclave("proxy", "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert exited(pid)

    await asyncio.to_thread(scenario)


def _log(home: Path) -> str:
    try:
        return (home / ".cache" / "enclave" / "proxy.log").read_text()[-2000:]
    except OSError:
        return ""
