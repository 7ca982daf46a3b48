"""Issue 20 point 13: ``pip install enclave`` installs somebody else's project (``enclave`` on
PyPI is "Connect to Enclave Markets API"; ``attestation`` and ``model-manager`` are taken
too). The distribution is ``enclave-inference`` (no such project on PyPI, checked with
``pip download --no-deps enclave-inference==99``: "from versions: none"); the import packages
and the command keep their names. The README's and the docs' install lines must be true:
they install from the checkout or its wheel, never a bare name from an index."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "enclave-inference"
#: Names on PyPI that belong to unrelated projects.
TAKEN = ("enclave", "attestation", "model-manager", "model_manager")
#: The sentences that warn against the bare name (they are not install lines).
WARNINGS = ("Do not `pip install enclave`", "`pip install enclave` gets an unrelated project")
DOCUMENTS = ("README.md", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md"))))
#: ``pip install`` and what follows its options: the first thing it installs.
_OPTION = r"(?:-e|--editable|(?:--target|-t|--prefix|--root)\s+\S+|-{1,2}[\w-]+)"
_PIP_INSTALL = re.compile(rf"pip install\s+((?:{_OPTION}\s+)*)(\S+)")
#: Tools named as themselves, not this project under another name.
_THIRD_PARTY = ("torch", "vllm", '"vllm', "'vllm", "py-spy")
#: What an install line may install: this checkout (with extras), a wheel we built, a path.
_ALLOWED_TARGET = re.compile(
    r"""^['"]?(\.|\.\[[\w,]+\]|[\w./<>${}-]*enclave_inference-\S*\.whl.*|/\S+)['"]?$"""
)


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_the_distribution_name_is_ours_and_the_packages_keep_theirs() -> None:
    project = _project()
    assert project["name"] == DISTRIBUTION
    assert project["name"] not in TAKEN
    assert project["scripts"] == {"enclave": "enclave.cli:main"}
    # The package list is setup.py's (the wheel's product packages; enclave_dev only in an
    # editable install): read, not run.
    lists = {
        target.id: ast.literal_eval(node.value)
        for node in ast.parse((ROOT / "setup.py").read_text()).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in ("PRODUCT", "DEVELOPMENT")
    }
    assert lists["PRODUCT"] == [
        *("enclave", "enclave.*", "attestation", "attestation.*"),
        *("model_manager", "model_manager.*"),
    ]
    assert lists["DEVELOPMENT"] == ["enclave_dev", "enclave_dev.*"]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_install_line_installs_this_project(document: str) -> None:
    """Code lines (indented, or in backticks) with ``pip install`` name the checkout or its
    wheel, never a bare project name an index would resolve to somebody else's code."""
    text = (ROOT / document).read_text()
    for warning in WARNINGS:
        text = text.replace(warning, "")
    for line in text.splitlines():
        spans = re.findall(r"`([^`]*)`", line)
        if line.startswith("    "):  # a code block's line: its command, and spans in its comment
            command, _, comment = line.partition(" #")
            spans = [command, *re.findall(r"`([^`]*)`", comment)]
        for code in spans:
            for match in _PIP_INSTALL.finditer(code):
                target = match.group(2)
                if target.startswith(_THIRD_PARTY):
                    continue  # the real-vLLM environment's own packages, the profiler
                assert _ALLOWED_TARGET.match(target), f"{document}: {code.strip()!r}"


def test_the_readme_says_how_the_names_relate() -> None:
    readme = (ROOT / "README.md").read_text()
    assert DISTRIBUTION in readme
    for name in ("`enclave`", "`attestation`", "`model_manager`"):
        assert name in readme
    assert "Do not `pip install enclave`" in readme


def test_the_dockerfile_installs_the_wheel_by_its_name() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "enclave_inference-*.whl" in dockerfile
    assert "enclave-*.whl" not in dockerfile  # the old name's wheel is never built now
