"""enclave.settings: defaults, environment, command-line precedence, validation, secrets."""

from __future__ import annotations

import pytest

from enclave.gateway import GatewayLimits
from enclave.protocol.chunked import MIN_CHUNK_SIZE
from enclave.settings import (
    ServiceSettings,
    SettingsError,
    insecure_settings,
    insecure_warnings,
    load_settings,
)

TOKEN = "load-token-6c0ffee-secret-91b7d2e4a"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ENCLAVE_") or name == "LOAD_TOKEN":
            monkeypatch.delenv(name)


def test_defaults_name_every_limit() -> None:
    service = load_settings({}).service
    assert service.host == "0.0.0.0"
    assert service.port == 8443
    assert service.tee == "auto"
    assert service.insecure_allow_simulated_tee is False
    assert service.certificate_lifetime_seconds == 24 * 3600
    assert service.ohttp_key_rotation_seconds == 7 * 24 * 3600
    assert service.replay_window_seconds == 60
    assert service.body_limit_bytes == 32 * 1024 * 1024
    assert service.max_chunk_size == MIN_CHUNK_SIZE == 16384
    assert service.max_concurrent_streams == 256
    assert service.shutdown_grace_seconds == 30
    assert service.log_format == "text"
    assert service.emit_model_digest_extension is False
    assert service.body_timeout_seconds == 30
    assert service.body_memory_budget_bytes == 256 * 1024 * 1024
    assert (service.max_connections, service.max_connections_per_address) == (2048, 256)
    assert service.tls_handshake_timeout_seconds == 10
    assert service.header_timeout_seconds == 10
    assert service.keep_alive_timeout_seconds == 5


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_PORT", "9443")
    monkeypatch.setenv("ENCLAVE_LOG_FORMAT", "json")
    monkeypatch.setenv("ENCLAVE_VLLM_PORT", "8123")
    monkeypatch.setenv("LOAD_TOKEN", TOKEN)
    settings = load_settings({})
    assert settings.service.port == 9443
    assert settings.service.log_format == "json"
    assert settings.model_manager.vllm_port == 8123
    assert settings.model_manager.load_token is not None
    assert settings.model_manager.load_token.get_secret_value() == TOKEN


def test_command_line_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_PORT", "9443")
    monkeypatch.setenv("ENCLAVE_MODELS_DIR", "/from/env")
    settings = load_settings({"port": 10443, "models_dir": "/from/flag", "host": None})
    assert settings.service.port == 10443
    assert str(settings.model_manager.models_dir) == "/from/flag"
    assert settings.service.host == "0.0.0.0"  # None: the flag was not given


def test_gateway_settings_are_derived() -> None:
    settings = load_settings({"replay_window_seconds": 30, "max_concurrent_streams": 8})
    assert settings.gateway == GatewayLimits(
        body_limit_bytes=32 * 1024 * 1024,
        max_chunk_size=16384,
        replay_window_seconds=30,
        replay_cache_size=settings.service.replay_cache_size,
        max_concurrent_requests=8,
        padding=256,
    )


def test_padding_is_on_by_default_and_off_only_as_insecure() -> None:
    assert load_settings().service.padding_bucket == 256
    assert load_settings({"stream_padding_bytes": 1024}).service.padding_bucket == 1024
    with pytest.raises(SettingsError, match="insecure_no_stream_padding"):
        load_settings({"stream_padding_bytes": 0})
    off = load_settings({"insecure_no_stream_padding": True})
    assert off.service.padding_bucket == 0
    assert off.gateway.padding == 0
    assert "insecure_no_stream_padding" in insecure_settings(off)
    assert any("size padding is off" in line for line in insecure_warnings(off))


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 70000},
        {"tee": "sgx"},
        {"max_chunk_size": 16383},
        {"max_concurrent_streams": 0},
        {"log_format": "xml"},
        {"replay_window_seconds": 0},
        {"ohttp_key_overlap_seconds": 8 * 24 * 3600},
        {"vllm_port": 0},
        {"body_memory_budget_bytes": 32 * 1024 * 1024 - 1},  # below one maximal body
        {"max_connections": 10, "max_connections_per_address": 11},
        {"max_connections_per_prefix": 0},
        {"light_peer_connections": 0},
        {"header_timeout_seconds": 0},
        {"body_timeout_seconds": 0},
        {"shutdown_grace_seconds": -1},
    ],
)
def test_invalid_values_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(SettingsError, match="invalid settings"):
        load_settings(overrides)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings({"no_such_setting": 1})


def test_simulated_tee_needs_its_insecure_switch_and_says_why() -> None:
    with pytest.raises(SettingsError, match="simulated Intel-like root"):
        load_settings({"tee": "simulated"})
    settings = load_settings({"tee": "simulated", "insecure_allow_simulated_tee": True})
    assert settings.service.tee == "simulated"
    assert any("simulated TEE" in line for line in insecure_warnings(settings))
    assert insecure_warnings(load_settings({})) == []


def test_secrets_never_appear_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings({"load_token": TOKEN, "push_token": TOKEN})
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    # A validation error elsewhere must not echo the values it was given.
    with pytest.raises(SettingsError) as caught:
        load_settings({"load_token": TOKEN, "push_url": f"http://{TOKEN}.example/"})
    assert TOKEN not in str(caught.value)
    assert caught.value.__cause__ is None


def test_service_settings_are_frozen_and_forbid_extras() -> None:
    service = ServiceSettings()
    with pytest.raises(ValueError, match="frozen"):
        setattr(service, "port", 1)  # noqa: B010 - assignment must be refused at run time
    with pytest.raises(ValueError, match="Extra inputs"):
        ServiceSettings.model_validate({"bogus": 1})


def test_the_development_engine_is_declared_and_warned_about() -> None:
    command = "python3 -m enclave_dev.engine --dev-load-seconds 1"
    with pytest.raises(SettingsError, match="insecure_dev_engine"):
        load_settings({"engine_command": command})
    settings = load_settings(
        {
            "engine_command": command,
            "insecure_dev_engine": True,
            "tee": "simulated",
            "insecure_allow_simulated_tee": True,
        }
    )
    assert insecure_settings(settings) == ("insecure_allow_simulated_tee", "insecure_dev_engine")
    assert any("development engine" in line for line in insecure_warnings(settings))
    assert insecure_settings(load_settings({})) == ()


def test_data_plane_workers_default_to_the_cores_less_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from enclave.settings import data_plane_workers

    service = load_settings({}).service
    assert service.data_plane_workers == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(16)))
    assert data_plane_workers(service) == 15
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0})
    assert data_plane_workers(service) == 1  # at least one
    assert data_plane_workers(load_settings({"data_plane_workers": 3}).service) == 3
    with pytest.raises(SettingsError):
        load_settings({"data_plane_workers": -1})
