"""The settings and metrics references in docs/operations.md are generated from the code by
scripts/gen-settings-reference; this fails when the document is stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy._repo import ROOT, load_script

SCRIPT = ROOT / "scripts" / "gen-settings-reference"
DOC = ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return load_script(SCRIPT, "gen_settings_reference")


def test_operations_doc_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (
        "docs/operations.md is stale: run scripts/gen-settings-reference\n" + result.stderr
    )


def test_check_fails_on_a_stale_document(tmp_path: Path) -> None:
    stale = tmp_path / "operations.md"
    stale.write_text(
        DOC.read_text(encoding="utf-8").replace("| `port` |", "| `prot` |"), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--doc", str(stale)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    assert "`prot`" in result.stderr


def test_every_setting_is_listed(generator: ModuleType) -> None:
    from enclave.cli._proxy import ProxySettings
    from enclave.settings import ServiceSettings
    from model_manager import ModelManagerSettings

    text = generator.settings_reference()
    for model in (ServiceSettings, ModelManagerSettings, ProxySettings):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, name
    assert "| `allowed_hosts` | `ENCLAVE_PROXY_ALLOWED_HOSTS` | comma-separated list |" in text
    assert "`ENCLAVE_LOAD_TOKEN`, `LOAD_TOKEN`" in text
    assert "| `port` | `ENCLAVE_PORT` | int | `8443` | >= 0, <= 65535 |" in text


def test_secret_defaults_are_never_rendered(generator: ModuleType) -> None:
    text = generator.settings_reference()
    for line in text.splitlines():
        if "_token`" in line:
            assert "| secret, optional | unset |" in line, line


def test_missing_markers_are_an_error(generator: ModuleType) -> None:
    with pytest.raises(generator.GenerationError):
        generator.render("# no markers here\n")


def test_every_metric_is_listed(generator: ModuleType) -> None:
    from enclave.metrics import ServiceMetrics

    text = generator.metrics_reference()
    for family in ServiceMetrics().registry.collect():
        assert f"`{family.name}" in text, family.name
