"""enclave.development: the one lookup from the product to the development package."""

from __future__ import annotations

import pytest

from enclave import development
from enclave.settings import ServiceSettings
from model_manager import ModelManagerSettings


def test_each_part_is_keyed_by_the_setting_that_enables_it() -> None:
    fields = set(ServiceSettings.model_fields) | set(ModelManagerSettings.model_fields)
    for setting in development.PARTS:
        assert setting.startswith("insecure_")
        assert setting in fields or setting == "insecure_demo"  # the demo: a command


def test_load_gives_the_part_from_a_checkout() -> None:
    tee = development.load("insecure_allow_simulated_tee")
    assert tee.__name__ == "enclave_dev.tee"
    assert hasattr(tee, "SimulatedQuoteProvider")
    assert development.load("insecure_allow_simulated_gpu").__name__ == "enclave_dev.gpu"
    assert development.load("insecure_demo").__name__ == "enclave_dev.demo"


@pytest.mark.parametrize("absent", ["enclave_dev_absent.tee", "enclave_dev.absent"])
def test_a_production_install_gets_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, absent: str
) -> None:
    monkeypatch.setitem(development.PARTS, "insecure_allow_simulated_tee", absent)
    assert not development.available("insecure_allow_simulated_tee")
    with pytest.raises(development.DevelopmentMissingError, match="this is a production install"):
        development.load("insecure_allow_simulated_tee")
