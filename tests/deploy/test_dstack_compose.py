"""The dstack app compose file: quotes from the guest agent's socket, pinned images, GPUs,
and no secret written into the file (the compose hash is public and measured)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy._repo import DEPLOY

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip: PyYAML)")

COMPOSE = DEPLOY / "dstack" / "docker-compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def test_service_gets_quotes_from_the_dstack_agent(compose: dict[str, Any]) -> None:
    service = compose["services"]["enclave"]
    assert service["environment"]["ENCLAVE_TEE"] == "dstack"
    assert "/var/run/dstack.sock:/var/run/dstack.sock" in service["volumes"]


def test_service_is_the_only_listener_on_8443(compose: dict[str, Any]) -> None:
    published = [
        (name, port)
        for name, service in compose["services"].items()
        for port in service.get("ports", [])
    ]
    assert published == [("enclave", "8443:8443")]


def test_images_are_pinned_by_digest(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert re.search(r"@sha256:[0-9a-f]{64}$", service["image"]), name


def test_gpus_are_reserved(compose: dict[str, Any]) -> None:
    devices = compose["services"]["enclave"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_secrets_are_interpolated_never_written(compose: dict[str, Any]) -> None:
    environment = compose["services"]["enclave"]["environment"]
    for key, value in environment.items():
        if "TOKEN" in key:
            assert value == "${" + key + "}", key


def test_hardening(compose: dict[str, Any]) -> None:
    service = compose["services"]["enclave"]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "models:/models:ro" in service["volumes"]
