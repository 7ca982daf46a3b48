"""The Kubernetes manifests: each document validated (strictly: unknown fields fail) against
the Kubernetes JSON schemas that the kubernetes-validate package ships (offline), and the
wiring between them checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy._repo import DEPLOY

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip: PyYAML)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip: kubernetes-validate)"
)

MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
#: The oldest Kubernetes minor release the manifests must be valid for, and the newest.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _all() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in _documents(path)}


def test_manifests_exist() -> None:
    kinds = {doc["kind"] for path in MANIFESTS for doc in _documents(path)}
    expected = {"RuntimeClass", "StatefulSet", "Service", "NetworkPolicy", "ConfigMap"}
    assert expected <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path: Path, version: str) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, version, strict=True)


def test_validation_can_fail() -> None:
    statefulset = _all()["StatefulSet"]
    broken = yaml.safe_load(yaml.safe_dump(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_pods_run_in_the_tdx_runtime_class_with_gpus() -> None:
    docs = _all()
    pod = docs["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == docs["RuntimeClass"]["metadata"]["name"]
    assert "tdx" in docs["RuntimeClass"]["handler"]
    container = pod["containers"][0]
    limits = container["resources"]["limits"]
    assert any(name.startswith("nvidia.com/") for name in limits)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False


def test_quotes_come_from_the_coco_attestation_agent() -> None:
    """Regression: a CoCo pod sees neither configfs-tsm nor the dstack socket; quotes come from
    the attestation agent, whose REST routes the kernel_params annotation turns on."""
    docs = _all()
    assert docs["ConfigMap"]["data"]["ENCLAVE_TEE"] == "coco"
    annotations = docs["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    params = annotations["io.katacontainers.config.hypervisor.kernel_params"]
    assert "agent.guest_components_rest_api=attestation" in params.split()


def test_readiness_is_ready_over_https() -> None:
    container = _all()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["scheme"]) == ("/ready", "HTTPS")
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == 8443


def test_images_are_pinned_by_digest() -> None:
    pod = _all()["StatefulSet"]["spec"]["template"]["spec"]
    for container in pod["containers"] + pod.get("initContainers", []):
        assert "@sha256:" in container["image"], container["name"]


def test_services_and_policy_select_the_pods() -> None:
    labels = _all()["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    services = [d for p in MANIFESTS for d in _documents(p) if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"enclave", "enclave-headless"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
    policy = _all()["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {port["port"] for rule in policy["ingress"] for port in rule["ports"]}
    assert ingress_ports == {8443}


def test_no_secret_values_in_manifests() -> None:
    for path in MANIFESTS:
        for document in _documents(path):
            assert document["kind"] != "Secret", path.name
            data = document.get("data", {})
            assert not any("TOKEN" in key for key in data), path.name
