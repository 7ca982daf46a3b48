"""The one door from the product to the development package (``enclave_dev``).

The simulated TEE, the simulated GPU, the development engine and ``enclave demo`` live in
``enclave_dev``, which no wheel contains. Product code reaches them only through ``load``,
keyed by the ``insecure_*`` setting that turns each on, so a search for ``load(`` finds every
place a fake can enter the service::

    tee = development.load("insecure_allow_simulated_tee")
    provider = tee.SimulatedQuoteProvider(tee.Simulator.create())

In a production install the package is absent and ``load`` raises ``DevelopmentMissingError``
("the development package is not installed: this is a production install").
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Literal

from enclave.errors import EnclaveError

__all__ = ["MISSING", "PARTS", "DevelopmentMissingError", "DevelopmentSetting", "available", "load"]

#: The settings that enable a development part.
DevelopmentSetting = Literal[
    "insecure_allow_simulated_tee",
    "insecure_allow_simulated_gpu",
    "insecure_dev_engine",
    "insecure_demo",
]

#: Each setting -> the module it enables. ``insecure_demo`` is not a service setting: it names
#: ``enclave demo``, which runs the service with the first and the third on.
PARTS: dict[DevelopmentSetting, str] = {
    "insecure_allow_simulated_tee": "enclave_dev.tee",
    "insecure_allow_simulated_gpu": "enclave_dev.gpu",
    "insecure_dev_engine": "enclave_dev.engine",
    "insecure_demo": "enclave_dev.demo",
}

MISSING = "the development package is not installed: this is a production install"


class DevelopmentMissingError(EnclaveError, RuntimeError):
    """A development part was asked for where the development package is absent."""


def available(setting: DevelopmentSetting) -> bool:
    """Whether the part ``setting`` enables is importable here (without importing it)."""
    try:
        return importlib.util.find_spec(PARTS[setting]) is not None
    except ModuleNotFoundError:  # the parent package itself is absent
        return False


def load(setting: DevelopmentSetting) -> ModuleType:
    """The module ``setting`` enables; ``DevelopmentMissingError`` in a production install."""
    name = PARTS[setting]
    if not available(setting):
        raise DevelopmentMissingError(f"{MISSING} ({name}, enabled by {setting}, is absent)")
    return importlib.import_module(name)
