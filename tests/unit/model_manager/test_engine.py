import sys
from pathlib import Path

import httpx
import pytest

from model_manager.catalog import Catalog
from model_manager.engine import engine_argv, engine_endpoint, engine_environment

from .conftest import SettingsFactory


def test_default_argv_is_vllm_serve_on_a_unix_socket(
    models_dir: Path, make_settings: SettingsFactory
) -> None:
    settings = make_settings(engine_command="vllm")
    spec = Catalog(models_dir).resolve("tiny")
    assert engine_argv(settings, spec) == [
        "vllm",
        "serve",
        str(spec.path),
        "--served-model-name",
        "tiny",
        "--uds",
        str(settings.run_dir / "engine.sock"),
        "--no-enable-log-requests",
    ]


def test_tcp_transport_binds_loopback_and_catalog_args_follow(
    models_dir: Path, make_settings: SettingsFactory
) -> None:
    (models_dir / "models.toml").write_text("[models.tiny]\nmax_model_len = 512\n")
    settings = make_settings(engine_command="python3 -m dev", engine_transport="tcp", vllm_port=9)
    spec = Catalog(models_dir).resolve("tiny")
    argv = engine_argv(settings, spec)
    assert argv[:3] == ["python3", "-m", "dev"]
    assert argv[7:] == [
        "--host",
        "127.0.0.1",
        "--port",
        "9",
        "--no-enable-log-requests",
        "--max-model-len",
        "512",
    ]
    assert engine_endpoint(settings).base_url == "http://127.0.0.1:9"


def test_environment_is_clean_and_allow_listed(make_settings: SettingsFactory) -> None:
    settings = make_settings(engine_env_allowlist=["EXTRA_ONE", "MYPREFIX_*"])
    environ = {
        "PATH": "/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "VLLM_USE_V1": "1",
        "HF_HOME": "/hf",
        "EXTRA_ONE": "x",
        "MYPREFIX_A": "a",
        "LOAD_TOKEN": "secret",
        "ENCLAVE_LOAD_TOKEN": "secret",
        "ENCLAVE_PUSH_TOKEN": "secret",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "LD_PRELOAD": "/evil.so",
        "PYTHONPATH": "/x",
    }
    assert engine_environment(settings, environ) == {
        "PATH": "/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "VLLM_USE_V1": "1",
        "HF_HOME": "/hf",
        "EXTRA_ONE": "x",
        "MYPREFIX_A": "a",
        "PYTHONUNBUFFERED": "1",
    }


def test_environment_defaults_when_parent_has_nothing(make_settings: SettingsFactory) -> None:
    env = engine_environment(make_settings(), {})
    assert env["PATH"].startswith("/usr/local/sbin")
    assert env["LANG"] == "C.UTF-8"
    assert "HOME" not in env


async def test_engine_client_speaks_over_the_unix_socket(
    tmp_path: Path, make_settings: SettingsFactory
) -> None:
    import asyncio

    sock = tmp_path / "e.sock"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, path=str(sock))
    async with server:
        endpoint = engine_endpoint(make_settings(engine_socket=sock))
        async with endpoint.client() as client:
            response = await client.get("/v1/models")
    assert (response.status_code, response.text) == (200, "ok")
    assert isinstance(response.request.url, httpx.URL)


@pytest.mark.parametrize("command", ["", "   "])
def test_empty_engine_command_is_refused(make_settings: SettingsFactory, command: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        make_settings(engine_command=command)


def test_sys_executable_is_a_valid_command(make_settings: SettingsFactory) -> None:
    assert make_settings().engine_command[0] == sys.executable
