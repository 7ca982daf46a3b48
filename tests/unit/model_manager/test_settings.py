from pathlib import Path

import pytest
from pydantic import ValidationError

from model_manager.settings import ModelManagerSettings


def test_defaults_name_every_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOAD_TOKEN", "ENCLAVE_LOAD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    settings = ModelManagerSettings()
    assert settings.models_dir == Path("/models")
    assert settings.engine_command == ("vllm",)
    assert settings.push_interval_seconds == 30.0
    assert settings.load_token is None
    assert settings.insecure_dev_mode is False
    assert settings.restore_on_boot is False
    assert settings.engine_socket_path() == Path("/run/enclave/engine.sock")


@pytest.mark.parametrize("variable", ["LOAD_TOKEN", "ENCLAVE_LOAD_TOKEN"])
def test_load_token_from_either_variable(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "s3cret-token-4e9a0b7c2d5f8e1a3b6c")
    settings = ModelManagerSettings()
    assert settings.load_token is not None
    assert settings.load_token.get_secret_value() == "s3cret-token-4e9a0b7c2d5f8e1a3b6c"
    assert "s3cret-token-4e9a0b7c2d5f8e1a3b6c" not in repr(settings)
    assert "s3cret-token-4e9a0b7c2d5f8e1a3b6c" not in str(settings.model_dump())


def test_env_prefix_and_shlex_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_ENGINE_COMMAND", "python3 -m 'enclave_dev.engine'")
    monkeypatch.setenv("ENCLAVE_INSECURE_DEV_ENGINE", "true")
    monkeypatch.setenv("ENCLAVE_PUSH_INTERVAL_SECONDS", "5")
    settings = ModelManagerSettings()
    assert settings.engine_command == ("python3", "-m", "enclave_dev.engine")
    assert settings.push_interval_seconds == 5.0


@pytest.mark.parametrize(
    "values",
    [
        {"no_such_setting": 1},
        {"load_token": ""},
        {"load_timeout_seconds": 0},
        {"push_jitter_fraction": 2},
        {"vllm_port": 70000},
        {"push_url": "http://manager.example/status"},
        {"push_url": "ftp://127.0.0.1/x"},
    ],
)
def test_invalid_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ModelManagerSettings.model_validate(values)


@pytest.mark.parametrize(
    ("url", "dev"),
    [
        ("https://manager.example/status", False),
        ("http://127.0.0.1:9000/status", False),
        ("http://manager.example/status", True),
    ],
)
def test_push_url_https_or_loopback_or_dev(url: str, dev: bool) -> None:
    settings = ModelManagerSettings.model_validate({"push_url": url, "insecure_dev_mode": dev})
    assert settings.push_url is not None


@pytest.mark.parametrize(
    "command",
    [
        ("python3", "-m", "enclave_dev.engine"),
        ("/usr/bin/python3", "/src/enclave_dev/engine/__main__.py", "--dev-load-seconds", "1"),
    ],
)
def test_the_development_engine_needs_insecure_dev_engine(command: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError, match="insecure_dev_engine"):
        ModelManagerSettings(engine_command=command)
    assert ModelManagerSettings(
        engine_command=command, insecure_dev_engine=True
    ).insecure_dev_engine


def test_a_real_engine_needs_no_insecure_setting() -> None:
    assert not ModelManagerSettings(engine_command=("vllm",)).insecure_dev_engine


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("tok-3f9d1c0a7b", "too short to be a secret"),  # 14 characters
        ("x" * 31, "too short to be a secret"),
        ("ab" * 32, "too little entropy"),  # long, but two different characters
    ],
)
def test_a_load_token_that_is_not_a_secret_is_refused(token: str, problem: str) -> None:
    """Issue 12 point 10: any non-blank token used to be accepted."""
    with pytest.raises(ValidationError, match=problem) as caught:
        ModelManagerSettings.model_validate({"load_token": token})
    assert token not in str(caught.value.errors(include_input=False))


def test_a_random_hex_token_is_accepted() -> None:
    settings = ModelManagerSettings.model_validate(
        {"load_token": "3f9d1c0a7be5826b4f9c0d17a3e8b2c4"}
    )
    assert settings.load_token is not None
