"""What the owner sends a worker, as plain CBOR-able values, and back again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from enclave.protocol._keyconfig import KeyConfig, SymmetricAlgorithms
from enclave.protocol._keystore import GatewayKey, KeyStore
from enclave.protocol.hpke import KemId, get_kem
from enclave.settings import EnclaveSettings, ServiceSettings
from model_manager import ModelManagerSettings, ModelStatus
from model_manager.digests import ModelDigest
from model_manager.status import StatusError

__all__ = [
    "dump_keys",
    "dump_settings",
    "dump_status",
    "load_keys",
    "load_settings_values",
    "load_status",
]


def _dump_model(model: BaseSettings) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = str(value)
        elif value is not None and type(value).__module__.startswith("pydantic"):
            value = str(value)  # URLs
        values[name] = value
    return values


def dump_settings(settings: EnclaveSettings) -> dict[str, Any]:
    """Every field's value, secrets included (they travel only over the channel)."""
    return {
        "service": _dump_model(settings.service),
        "model_manager": _dump_model(settings.model_manager),
    }


def load_settings_values(values: dict[str, Any]) -> EnclaveSettings:
    return EnclaveSettings(
        service=ServiceSettings.model_validate(values["service"]),
        model_manager=ModelManagerSettings.model_validate(values["model_manager"]),
    )


def dump_status(status: ModelStatus) -> dict[str, Any]:
    digest = status.digest
    return {
        "proxy_status": status.proxy_status,
        "loaded_model": status.loaded_model,
        "digest": None if digest is None else [digest.kind, digest.value, digest.device],
        "proxy_message": status.proxy_message,
        "proxy_progress": status.proxy_progress,
        "since": status.since,
        "generation": status.generation,
        "restarts": status.restarts,
        "error": None if status.error is None else [status.error.code, status.error.message],
        "insecure": list(status.insecure),
        "hashing": None if status.hashing is None else list(status.hashing),
    }


def load_status(values: dict[str, Any]) -> ModelStatus:
    digest = values["digest"]
    error = values["error"]
    hashing = values["hashing"]
    return ModelStatus(
        proxy_status=values["proxy_status"],
        loaded_model=values["loaded_model"],
        digest=None if digest is None else ModelDigest(digest[0], digest[1], digest[2]),
        proxy_message=values["proxy_message"],
        proxy_progress=values["proxy_progress"],
        since=values["since"],
        generation=values["generation"],
        restarts=values["restarts"],
        error=None if error is None else StatusError(error[0], error[1]),
        insecure=tuple(values["insecure"]),
        hashing=None if hashing is None else (hashing[0], hashing[1]),
    )


def dump_keys(store: KeyStore) -> dict[str, Any]:
    """The key pairs (active and retired) and which are advertised, in order."""
    keys = []
    for key_id in store.key_ids:
        key = store.lookup(key_id)
        config = key.config
        keys.append(
            {
                "key_id": config.key_id,
                "kem_id": int(config.kem_id),
                "public_key": config.public_key,
                "symmetric": [[int(s.kdf_id), int(s.aead_id)] for s in config.symmetric],
                "private_key": key.private_key.private_bytes(),
            }
        )
    return {"keys": keys, "active": [config.key_id for config in store.active_configs]}


def load_keys(values: dict[str, Any]) -> tuple[list[GatewayKey], list[GatewayKey]]:
    """The advertised keys in order, and the others (accepted, not advertised)."""
    keys = {}
    for item in values["keys"]:
        symmetric = tuple(SymmetricAlgorithms(kdf, aead) for kdf, aead in item["symmetric"])
        config = KeyConfig(item["key_id"], KemId(item["kem_id"]), item["public_key"], symmetric)
        private = get_kem(item["kem_id"]).load_private_key(item["private_key"])
        keys[config.key_id] = GatewayKey(config, private)
    active = [keys[key_id] for key_id in values["active"]]
    return active, [key for key_id, key in keys.items() if key_id not in values["active"]]
