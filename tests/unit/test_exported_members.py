"""Every public package and module lists ``__all__``, and every name in it exists (as httpx's
tests/test_exported_members.py does)."""

import importlib
import pkgutil

import pytest

import attestation
import enclave
import model_manager


def _modules() -> list[str]:
    names = []
    for package in (attestation, enclave, model_manager):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            leaf = info.name.rsplit(".", 1)[1]
            if not leaf.startswith("_"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_public_module_lists_existing_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == []
    assert len(set(exported)) == len(exported)
