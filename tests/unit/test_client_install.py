"""The client-only install (issue 15 point 11): ``pip install .`` (the ``enclave-inference``
distribution) is the client side (enclave verify, the attested transports, enclave proxy /
relay); the service adds the ``server`` extra. The client's modules import nothing of the
server side, every package the project imports is declared, and the client commands run with
the server-only packages absent."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("enclave", "attestation", "model_manager")
CLIENT_ROOTS = (
    "enclave.client",
    "enclave.protocol",
    "enclave.cli._verify",
    "enclave.cli._proxy",
    "enclave.cli._relay",
    "enclave.cli._listen",
)
SERVER_SIDE = (
    "enclave.server",
    "enclave.app",
    "enclave.service",
    "enclave.routes",
    "enclave.gateway",
    "enclave.report",
    "enclave.metrics",
    "enclave.settings",
    "enclave.cli._serve",
    "model_manager",
)
#: The development package (in no wheel; tests/deploy/test_production_contents.py): reached
#: only through enclave.development when chosen (tee=simulated), never followed here, and not
#: a third-party package either.
DEV_PACKAGE = "enclave_dev"
#: import name -> distribution name, where they differ.
DISTRIBUTIONS = {
    "OpenSSL": "pyopenssl",
    "prometheus_client": "prometheus-client",
    "pynvml": "nvidia-ml-py",
    "pydantic_settings": "pydantic-settings",
    "dcap_qvl": "dcap-qvl",
    "uvloop": "uvicorn",  # uvicorn[standard]
    "httptools": "uvicorn",
}
SERVER_ONLY_IMPORTS = ("prometheus_client", "OpenSSL", "pynvml", "uvloop", "httptools")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _closure(roots: list[str]) -> tuple[set[str], set[str]]:
    """(our modules, third-party top-level names) reachable from ``roots`` by any import
    (function-level ones too: they run when the client does)."""
    seen: set[str] = set()
    third: set[str] = set()
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        stack += [
            ".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in MODULES
        ]
        for imported in _imports(name, top_level_only=False):
            top = imported.split(".")[0]
            if top in PACKAGES:
                while imported and imported not in MODULES:
                    imported = imported.rpartition(".")[0]
                if imported:
                    stack.append(imported)
            elif top not in sys.stdlib_module_names and top != DEV_PACKAGE:
                third.add(top)
    return seen, third


def _client_roots() -> list[str]:
    return [name for name in MODULES if name.startswith(CLIENT_ROOTS)]


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", item, maxsplit=1)[0].lower() for item in requirements}

    return names(project["dependencies"]), names(project["optional-dependencies"]["server"])


def _distribution(import_name: str) -> str:
    return DISTRIBUTIONS.get(import_name, import_name).lower().replace("_", "-")


def test_the_client_imports_nothing_of_the_server_side() -> None:
    reached, _ = _closure(_client_roots())
    offenders = sorted(name for name in reached if name.startswith(SERVER_SIDE))
    assert offenders == []


def test_the_client_declares_every_package_it_imports() -> None:
    base, _ = _declared()
    _, third = _closure(_client_roots())
    missing = sorted(name for name in third if _distribution(name) not in base)
    assert missing == []
    assert "httpcore" in third  # imported by the transports, so declared


def test_every_package_the_project_imports_is_declared() -> None:
    base, server = _declared()
    shipped = list(MODULES)
    _, third = _closure(shipped)
    missing = sorted(name for name in third if _distribution(name) not in base | server)
    assert missing == []


def test_the_client_commands_run_without_the_server_only_packages(tmp_path: Path) -> None:
    """As in a client-only (`pip install .`) environment: the server extra's packages cannot be
    imported, and `enclave verify --help` / `enclave proxy start --help` still work."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Absent:\n"
        f"    names = {SERVER_ONLY_IMPORTS!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Absent())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    for argv in (("verify", "--help"), ("proxy", "start", "--help"), ("relay", "--help")):
        done = subprocess.run(
            [sys.executable, "-m", "enclave", *argv],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (argv, done.stderr[-2000:])
