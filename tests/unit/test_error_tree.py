"""One error tree per package (issue 23 point 3): every exception class a package defines
(private ones aside) derives from that package's root: ``enclave.errors.EnclaveError``,
``attestation.errors.AttestationError``, ``model_manager.errors.ModelManagerError``. Found by
walking the packages, so a class added later is held to it too."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import attestation
import enclave
import model_manager
from attestation.errors import AttestationError
from enclave.errors import EnclaveError
from model_manager.errors import ModelManagerError

ROOTS: dict[ModuleType, type[Exception]] = {
    enclave: EnclaveError,
    attestation: AttestationError,
    model_manager: ModelManagerError,
}


def _classes(package: ModuleType) -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        # The development package (enclave_dev) is not walked: it is no product package.
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found.append(value)
    return found


@pytest.mark.parametrize("package", list(ROOTS), ids=lambda package: package.__name__)
def test_every_exception_derives_from_the_package_root(package: ModuleType) -> None:
    root = ROOTS[package]
    outside = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _classes(package)
        if cls is not root and not issubclass(cls, root)
    )
    assert outside == []
