"""The local proxy as a user meets it (issue 15 points 6-8, issue 12 point 14): the real CLI in
a subprocess and the real proxy app under uvicorn, against the real service."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from attestation.policy import policy_to_toml
from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import HEALTH_PATH, ProxyOptions, build_proxy_app
from enclave_dev.local import serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import Running, serve, server_settings
from tests.integration.client.test_policy_workflow import run_cli, trust
from tests.integration.client.test_relay_cli_daemon import exited, socket_port

pytestmark = pytest.mark.asyncio(loop_scope="module")
RELAY = (sys.executable, "-m", "enclave", "relay")


def proxy(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclave", "proxy", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd()), **(env or {})},
        timeout=90,
        check=False,
    )


def _policy(running: Running, tmp: Path, **changes: object) -> Path:
    path = tmp / "policy.toml"
    path.write_text(policy_to_toml(running.policy(**changes)))
    return path


def _start_args(running: Running, tmp: Path, policy: Path) -> list[str]:
    return [
        "start",
        running.url,
        *trust(running),
        "--policy",
        str(policy),
        "--pid-file",
        str(tmp / "proxy.pid"),
        "--log-file",
        str(tmp / "proxy.log"),
    ]


async def test_start_checks_before_it_spawns(running: Running, tmp_path: Path) -> None:
    policy = _policy(running, tmp_path)
    args = _start_args(running, tmp_path, policy)

    def scenario() -> None:
        wrapped = proxy(*args, "--listen", "127.0.0.1:99999")
        assert wrapped.returncode == 2
        assert "outside 1..65535" in wrapped.stderr
        env_port = proxy(*args, env={"ENCLAVE_PROXY_PORT": "70000"})
        assert env_port.returncode == 2
        assert "port" in env_port.stderr
        public = proxy(*args, "--listen", "0.0.0.0:8799")
        assert public.returncode == 2
        assert "--insecure-listen-public" in public.stderr
        (tmp_path / "broken.toml").write_text("mrtd = [")
        broken = proxy(*args[:-4], "--policy", str(tmp_path / "broken.toml"), *args[-4:])
        assert broken.returncode == 2
        assert "not valid" in broken.stderr
        relay = proxy(*args, "--relay", "http://127.0.0.1:9/r", "--relay-key-env", "NO_SUCH_VAR")
        assert relay.returncode == 2
        assert "NO_SUCH_VAR is not set" in relay.stderr
        relay_port = subprocess.run(
            [*RELAY, "--gateway", "https://x/g", "--listen", "127.0.0.1:99999"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert relay_port.returncode == 2
        assert "outside 1..65535" in relay_port.stderr
        assert not (tmp_path / "proxy.pid").exists()
        assert not (tmp_path / "proxy.log").exists()  # nothing was spawned

    await asyncio.to_thread(scenario)


async def test_start_refuses_a_taken_port(running: Running, tmp_path: Path) -> None:
    policy = _policy(running, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await asyncio.to_thread(
            proxy, *_start_args(running, tmp_path, policy), "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 1
    assert "already in use" in result.stderr
    assert not (tmp_path / "proxy.pid").exists()


async def test_start_fails_with_the_reason_when_the_endpoint_does_not_verify(
    running: Running, tmp_path: Path
) -> None:
    wrong = _policy(running, tmp_path, mrtd=frozenset({b"\x22" * 48}))
    with socket_port() as port:
        listen = f"127.0.0.1:{port}"
    result = await asyncio.to_thread(
        proxy, *_start_args(running, tmp_path, wrong), "--listen", listen
    )
    assert result.returncode == 1
    assert "mrtd_not_allowed" in result.stderr
    assert not (tmp_path / "proxy.pid").exists()


async def test_stop_signals_only_an_enclave_proxy(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "proxy.pid").write_text(f"{other.pid}\n127.0.0.1:1\n")
        result = await asyncio.to_thread(proxy, "stop", "--pid-file", str(tmp_path / "proxy.pid"))
        assert result.returncode == 1
        assert "not an enclave proxy" in result.stderr
        assert other.poll() is None  # still running: not ours to signal
        assert not (tmp_path / "proxy.pid").exists()
    finally:
        other.kill()
        other.wait(10)


async def test_daemon_from_environment_status_limits_and_request_ids(
    running: Running, tmp_path: Path
) -> None:
    policy = _policy(running, tmp_path)
    with socket_port() as port:
        pass
    env = {
        "ENCLAVE_PROXY_HOST": "127.0.0.1",
        "ENCLAVE_PROXY_PORT": str(port),
        "ENCLAVE_PROXY_COMPAT": "both",
        "ENCLAVE_PROXY_BODY_LIMIT_BYTES": "4096",
        "ENCLAVE_PROXY_LOG_LEVEL": "info",
    }
    files = ("--pid-file", str(tmp_path / "proxy.pid"))

    def scenario() -> None:
        started = proxy(*_start_args(running, tmp_path, policy), env=env)
        assert started.returncode == 0, started.stderr
        assert "verified" in started.stdout
        pid = int((tmp_path / "proxy.pid").read_text().split()[0])
        try:
            status = proxy("status", *files)
            document = json.loads(status.stdout)
            assert status.returncode == 0, status.stdout
            assert document["endpoint"] == running.url
            assert document["compat"] == "both"
            assert document["verified"] is True
            assert document["last_verified"].endswith("Z")
            base = f"http://127.0.0.1:{port}"
            big = httpx.post(
                base + "/v1/chat/completions",
                content=b"x" * 5000,
                headers={"content-type": "application/json"},
                timeout=30,
            )
            assert big.status_code == 413
            assert big.json()["error"]["code"] == "body_too_large"
            assert big.headers["x-request-id"] == big.headers["request-id"]
            models = httpx.get(base + "/v1/models", timeout=30)
            assert models.status_code == 200
            assert models.headers["x-request-id"]
            counted = httpx.post(base + "/anthropic/v1/messages/count_tokens", json={})
            assert counted.status_code == 404
            assert counted.json()["type"] == "error"
            assert counted.json()["error"]["type"] == "not_found_error"
        finally:
            stop = proxy("stop", *files)
        assert stop.returncode == 0, stop.stdout
        assert exited(pid)

    await asyncio.to_thread(scenario)


async def test_a_gateway_413_stays_413_through_the_proxy(running: Running) -> None:
    """Issue 12 point 14: the service refuses a body over its limit with 413; through the
    proxy (whose own limit is higher here) the client gets 413, not a retryable 502."""
    transport = AsyncOhttpTransport(running.url, running.verifier())
    app = build_proxy_app(transport, options=ProxyOptions(body_limit_bytes=64 * 1024 * 1024))
    limit = running.server.settings.service.body_limit_bytes
    async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:
        response = await client.post(
            url + "/v1/chat/completions",
            content=b"{" + b" " * limit + b"}",
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


async def test_anthropic_routes_answer_in_anthropic_shape(running: Running) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    app = build_proxy_app(transport, compat="anthropic")
    async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/messages/count_tokens"),
            ("GET", "/v1/nothing"),
        ):
            response = await client.request(method, url + path, json={})
            assert response.status_code == 404, path
            assert response.json()["type"] == "error"
            assert response.json()["error"]["type"] == "not_found_error"
    transport = AsyncOhttpTransport(running.url, running.verifier())
    app = build_proxy_app(transport, compat="both")
    async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:
        message = await client.post(
            url + "/v1/messages",  # at the root too, in "both" mode
            json={
                "model": "tiny",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hello"}],
            },
        )
    assert message.status_code == 200, message.text
    assert message.json()["type"] == "message"
    assert message.headers["request-id"] == message.headers["x-request-id"] != ""


async def test_health_is_not_verified_after_the_service_is_gone(tmp_path: Path) -> None:
    simulator = Simulator.create()
    settings = server_settings(tmp_path)
    service = serve_locally(settings, simulator=simulator)
    server = await service.__aenter__()
    stopped = False
    try:
        running = Running(server, simulator, server.bound_port or 0, tmp_path)
        transport = AsyncOhttpTransport(running.url, running.verifier())
        options = ProxyOptions(recheck_seconds=0.0, recheck_timeout_seconds=10.0)
        app = build_proxy_app(transport, options=options)
        async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:
            health = (await client.get(url + HEALTH_PATH)).json()
            assert health["verified"] is True
            assert health["last_verified"] is not None
            await service.__aexit__(None, None, None)
            stopped = True
            health = (await client.get(url + HEALTH_PATH)).json()
            assert health["verified"] is False
            assert health["failure"] == "upstream_unreachable"
            refused = await client.get(url + "/v1/models")
            assert refused.status_code == 502
            assert refused.json()["error"]["code"] == "upstream_unreachable"
            assert "connection refused" in refused.json()["error"]["message"]
    finally:
        if not stopped:
            await service.__aexit__(None, None, None)


async def test_verify_suggests_the_base_url(running: Running) -> None:
    code, out, _ = await asyncio.to_thread(run_cli, "verify", running.url + "/v1")
    assert code == 1
    assert f"enclave verify {running.url}" in out
