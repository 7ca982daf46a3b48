"""The dependency direction of DESIGN.md: attestation imports neither enclave nor
model_manager; model_manager never imports enclave."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "attestation": {"enclave", "model_manager"},
    "model_manager": {"enclave"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_dependency_direction(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_top_levels(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert offenders == []


def _runtime_imports_of(path: Path, package: str) -> list[int]:
    """Lines importing ``package`` outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            typing_only.update(id(child) for child in ast.walk(node))
    lines = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        if any(name.split(".")[0] == package for name in modules):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("package", ["enclave", "attestation", "model_manager"])
def test_product_code_reaches_the_development_package_only_through_the_lookup(
    package: str,
) -> None:
    """The fakes (enclave_dev, in no wheel) are imported by no product module: the one way in
    is enclave.development.load, keyed by the insecure_* setting (types only otherwise)."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _runtime_imports_of(path, "enclave_dev")
    ]
    assert offenders == []
