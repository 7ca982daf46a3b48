"""Every ``insecure_*`` setting of every settings model is declared by the service and refused by
a default client policy: the mutation check made general (issue 20, "Checks no test catches":
``insecure_allow_simulated_gpu`` and ``insecure_dev_mode`` could go undeclared with no test
failing).

The models are found, not listed: every pydantic ``BaseSettings`` subclass in the packages,
plus the client's policy dataclasses; the fields are every field named ``insecure_*``. So a
setting another engineer adds later is picked up here, and fails until the service declares it.
A field that lives on the client side (its own policy, the local proxy) has no claims to be
declared in; each such field is exempt by name, with its reason, in ``CLIENT_SIDE``: a new
client-side field fails here until it is added there.

For a service setting, the whole path runs as ``enclave serve`` builds it: the settings with
that field on (and the simulated TEE so a quote can be made) -> ``EnclaveServer`` -> its
RA-TLS issuer's claims -> ``verify_evidence`` under the default policy, accepting every other
declared name: refused with ``service_insecure``. The field is also warned about at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from attestation.collateral import Collateral
from attestation.errors import VerificationError
from attestation.policy import DEFAULT_POLICY, Policy
from attestation.verify import verify_evidence
from enclave.server import EnclaveServer
from enclave.settings import EnclaveSettings, insecure_settings, insecure_warnings
from enclave_dev.local import local_settings
from enclave_dev.tee import Simulator

PACKAGES = ("enclave", "attestation", "model_manager")
TOKEN = "insecure-settings-token-5d0e8a2c9f1b"

#: insecure_* fields of the client side: nothing on the service to declare them in.
CLIENT_SIDE: dict[str, str] = {
    "attestation.policy.Policy.insecure_allow_debug": (
        "the client's own policy: accepts a debug TD, which the quote itself says"
    ),
    "attestation.policy.Policy.insecure_any_measurement": (
        "the client's own policy: trusts any measurement, warned on every use by the client"
    ),
    "attestation.policy.Policy.insecure_accept_service": (
        "the client's own policy: the list of service declarations it accepts"
    ),
    "attestation.gpu.policy.GpuPolicy.insecure_allow_devtools": (
        "the client's own GPU policy: accepts GPUs in devtools mode, which their report says"
    ),
    "enclave.cli._proxy.ProxySettings.insecure_listen_public": (
        "the local proxy runs on the client's machine and holds no claims; it warns, and "
        "names it in X-Confidential-Insecure"
    ),
}


def _models() -> list[type]:
    """Every settings model (BaseSettings) and client policy (a dataclass with insecure_*
    fields) defined in the packages."""
    found: dict[str, type] = {}
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if info.name.endswith("__main__") or ".simulator" in info.name:
                continue
            module = importlib.import_module(info.name)
            for obj in vars(module).values():
                if not inspect.isclass(obj) or obj.__module__ != module.__name__:
                    continue
                if issubclass(obj, BaseSettings) or (
                    dataclasses.is_dataclass(obj) and "Policy" in obj.__name__
                ):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


def _fields(model: type) -> list[str]:
    if issubclass(model, BaseModel):
        names = list(model.model_fields)
    else:
        names = [field.name for field in dataclasses.fields(model)]
    return [name for name in names if name.startswith("insecure_")]


def _all_fields() -> list[str]:
    return [
        f"{model.__module__}.{model.__qualname__}.{field}"
        for model in _models()
        for field in _fields(model)
    ]


def _service_models() -> dict[str, type]:
    """The models ``enclave serve`` composes (the fields of EnclaveSettings)."""
    hints = typing.get_type_hints(EnclaveSettings)
    return {field.name: hints[field.name] for field in dataclasses.fields(EnclaveSettings)}


SERVICE_FIELDS = [
    (part, field) for part, model in sorted(_service_models().items()) for field in _fields(model)
]


def test_every_insecure_field_is_either_a_service_setting_or_exempt_by_name() -> None:
    service = {
        f"{model.__module__}.{model.__qualname__}.{field}"
        for model in _service_models().values()
        for field in _fields(model)
    }
    everything = set(_all_fields())
    assert len(service) >= 4  # simulated TEE and GPU, dev engine, dev mode
    assert everything - service == set(CLIENT_SIDE), (
        "an insecure_* field that is neither a service setting nor listed in CLIENT_SIDE"
    )
    assert not service & set(CLIENT_SIDE)


def _settings(tmp: Path, **overrides: object) -> EnclaveSettings:
    return local_settings(tmp, load_token=TOKEN, **overrides)


@pytest.mark.parametrize(("part", "field"), SERVICE_FIELDS, ids=[f for _, f in SERVICE_FIELDS])
def test_an_insecure_setting_is_declared_and_refused_by_a_default_policy(
    tmp_path: Path, part: str, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = _service_models()[part]
    if model.model_fields[field].annotation is not bool:
        pytest.fail(f"{field}: give the test a value that turns this non-boolean setting on")
    # The simulated TEE is on for every case (the quote is made by the simulator), so
    # insecure_allow_simulated_tee is its own case only by being accepted below or not.
    settings = _settings(tmp_path, **{field: True})
    declared = insecure_settings(settings)
    assert field in declared
    assert any(field in line or "INSECURE" in line for line in insecure_warnings(settings))
    assert len(insecure_warnings(settings)) == len(declared)

    simulator = Simulator.create()
    server = EnclaveServer(settings, simulator=simulator)
    issuer = server.certificates.issuer
    claims = issuer.claims(ohttp_keys_body=b"keys", service_version="0.1.0")
    evidence = asyncio.run(issuer.evidence(claims)).encode()
    assert claims.insecure == declared

    def verify(policy: Policy) -> object:
        return verify_evidence(
            evidence,
            collateral=Collateral.from_json(simulator.collateral_json()),
            peer_spki_der=issuer.spki_der,
            policy=policy,
            now=simulator.now,
            insecure_root_ca_der=simulator.root_ca_der,
        )

    others = frozenset(declared) - {field}
    with pytest.raises(VerificationError) as refused:
        verify(dataclasses.replace(DEFAULT_POLICY, insecure_accept_service=others))
    assert refused.value.reason == "service_insecure"
    assert field in str(refused.value)
    # Accepted by name, it passes: the refusal was for this setting.
    verify(dataclasses.replace(DEFAULT_POLICY, insecure_accept_service=frozenset(declared)))


def test_an_insecure_setting_off_is_not_declared(tmp_path: Path) -> None:
    settings = _settings(tmp_path, insecure_allow_simulated_gpu=False)
    assert "insecure_allow_simulated_gpu" not in insecure_settings(settings)
    assert "insecure_dev_mode" not in insecure_settings(settings)
