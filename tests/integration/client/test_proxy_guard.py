"""Issue 20 point 1: the local proxy refuses web pages (DNS rebinding, cross-site POSTs) and,
with ``ENCLAVE_PROXY_TOKEN``, other local users: the real proxy app under uvicorn and the
real daemon, against the real service with the development engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import HEALTH_PATH, ProxyOptions, build_proxy_app
from tests.integration.client.conftest import Running, serve
from tests.integration.client.test_proxy_daemon import _policy, _start_args, proxy
from tests.integration.client.test_relay_cli_daemon import exited, socket_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "proxy-access-token-5c1e8a90b7d2"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
MESSAGE = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}]}


@contextlib.asynccontextmanager
async def _served(
    running: Running, compat: str = "both", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy app under uvicorn, and a client whose base URL is the proxy."""
    transport = AsyncOhttpTransport(running.url, running.verifier())
    app = build_proxy_app(transport, compat=compat, options=ProxyOptions(**options))
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        yield client


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _anthropic_refusal(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == error_type
    assert response.headers["x-confidential-verified"] == "false"


def _openai_refusal(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["x-confidential-verified"] == "false"


async def test_a_foreign_host_is_refused_on_every_route(running: Running) -> None:
    async with _served(running, allowed_hosts=("proxy.internal",)) as client:
        url = str(client.base_url).rstrip("/")
        evil = {"Host": f"evil.example:{_port(url)}"}
        _openai_refusal(await client.get(HEALTH_PATH, headers=evil), 403, "host_not_allowed")
        _openai_refusal(await client.get("/v1/models", headers=evil), 403, "host_not_allowed")
        refused = await client.post("/openai/v1/chat/completions", json=CHAT, headers=evil)
        _openai_refusal(refused, 403, "host_not_allowed")
        refused = await client.post("/v1/messages", json=MESSAGE, headers=evil)
        _anthropic_refusal(refused, 403, "permission_error")
        refused = await client.post("/anthropic/v1/messages", json=MESSAGE, headers=evil)
        _anthropic_refusal(refused, 403, "permission_error")
        _openai_refusal(await client.get("/nowhere", headers=evil), 403, "host_not_allowed")
        for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example"):
            refused = await client.get(HEALTH_PATH, headers={"Host": host})
            _openai_refusal(refused, 403, "host_not_allowed")
        for host in (
            f"127.0.0.1:{_port(url)}",
            "127.0.0.2",
            f"localhost:{_port(url)}",
            "LocalHost",
            "app.localhost",
            "[::1]:8787",
            "proxy.internal:8787",
        ):
            health = await client.get(HEALTH_PATH, headers={"Host": host})
            assert health.status_code == 200, host
            assert health.json()["verified"] is True
        models = await client.get("/v1/models", headers={"Host": "localhost"})
        assert models.status_code == 200


async def test_a_cross_site_text_plain_post_does_not_run(running: Running) -> None:
    """A form or ``fetch(..., {mode: "no-cors"})`` POST is text/plain, form-urlencoded or
    multipart: no preflight, so only the content type stops it (Origin aside)."""
    async with _served(running, compat="both") as client:
        body = json.dumps(MESSAGE)
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ):
            headers = {"Content-Type": content_type}
            refused = await client.post("/v1/messages", content=body, headers=headers)
            _anthropic_refusal(refused, 415, "invalid_request_error")
            refused = await client.post(
                "/openai/v1/chat/completions", content=json.dumps(CHAT), headers=headers
            )
            _openai_refusal(refused, 415, "unsupported_media_type")
        no_type = await client.post("/v1/messages", content=body)
        _anthropic_refusal(no_type, 415, "invalid_request_error")
        ok = await client.post(
            "/v1/messages", content=body, headers={"Content-Type": "application/json"}
        )
        assert ok.status_code == 200, ok.text


async def test_an_origin_not_allowed_is_refused_an_allowed_one_gets_cors(
    running: Running,
) -> None:
    async with _served(
        running, compat="both", allowed_origins=("http://localhost:3000",)
    ) as client:
        url = str(client.base_url).rstrip("/")
        for origin in ("https://evil.example", "null", f"http://127.0.0.1:{_port(url)}"):
            headers = {"Origin": origin}
            refused = await client.post("/openai/v1/chat/completions", json=CHAT, headers=headers)
            _openai_refusal(refused, 403, "origin_not_allowed")
            refused = await client.post("/v1/messages", json=MESSAGE, headers=headers)
            _anthropic_refusal(refused, 403, "permission_error")
            refused = await client.get(HEALTH_PATH, headers=headers)
            _openai_refusal(refused, 403, "origin_not_allowed")
            assert "access-control-allow-origin" not in refused.headers
        allowed = {"Origin": "http://localhost:3000"}
        preflight = await client.options(
            "/openai/v1/chat/completions",
            headers={**allowed, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        served = await client.post("/openai/v1/chat/completions", json=CHAT, headers=allowed)
        assert served.status_code == 200, served.text
        assert served.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert served.headers["x-confidential-verified"] == "true"


async def test_the_access_token_is_needed_on_every_route(running: Running) -> None:
    async with _served(running, compat="both", token=TOKEN) as client:
        url = str(client.base_url).rstrip("/")
        for headers, code in (
            ({}, "proxy_token_required"),
            ({"Authorization": "Bearer wrong-token-0000000000"}, "proxy_token_invalid"),
            ({"Authorization": f"Basic {TOKEN}"}, "proxy_token_invalid"),
            ({"x-api-key": TOKEN[:-1]}, "proxy_token_invalid"),
        ):
            health = await client.get(HEALTH_PATH, headers=headers)
            _openai_refusal(health, 401, code)
            assert "instance_proof" not in health.text
            assert "endpoint" not in health.json()
            refused = await client.post("/openai/v1/chat/completions", json=CHAT, headers=headers)
            _openai_refusal(refused, 401, code)
            refused = await client.post("/v1/messages", json=MESSAGE, headers=headers)
            _anthropic_refusal(refused, 401, "authentication_error")
        health = await client.get(HEALTH_PATH, headers={"Authorization": f"Bearer {TOKEN}"})
        assert health.status_code == 200
        assert health.json()["verified"] is True
        assert "pid" not in health.json()
        assert "instance" not in health.json()
        sdk = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key=TOKEN, max_retries=0)
        completion = await sdk.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        assert completion.choices[0].message.content
        await sdk.close()
        claude = anthropic.AsyncAnthropic(base_url=url, api_key=TOKEN, max_retries=0)
        message = await claude.messages.create(**MESSAGE)  # type: ignore[call-overload]
        assert message.type == "message"
        await claude.close()
        wrong = openai.AsyncOpenAI(base_url=url + "/openai/v1", api_key="sk-nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(**CHAT)  # type: ignore[call-overload]
        await wrong.close()


async def test_the_daemon_with_a_token_and_an_allowed_host(
    running: Running, tmp_path: Path
) -> None:
    """``enclave proxy start/status/stop`` with ``ENCLAVE_PROXY_TOKEN`` set: start and status
    still see their own child (a challenge, not the instance token), a caller without the token
    gets 401, a foreign Host 403."""
    policy = _policy(running, tmp_path)
    with socket_port() as port:
        pass
    env = {"ENCLAVE_PROXY_TOKEN": TOKEN, "ENCLAVE_PROXY_ALLOWED_HOSTS": "box.internal,other"}
    files = ("--pid-file", str(tmp_path / "proxy.pid"))
    base = f"http://127.0.0.1:{port}"

    def scenario() -> None:
        started = proxy(
            *_start_args(running, tmp_path, policy), "--listen", f"127.0.0.1:{port}", env=env
        )
        assert started.returncode == 0, started.stderr
        pid = int((tmp_path / "proxy.pid").read_text().split()[0])
        try:
            status = proxy("status", *files, env=env)
            assert status.returncode == 0, status.stdout
            assert json.loads(status.stdout)["verified"] is True
            without = proxy("status", *files, env={"ENCLAVE_PROXY_TOKEN": ""})
            assert without.returncode == 1
            assert json.loads(without.stdout)["http"] is False
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert httpx.get(base + "/v1/models", timeout=30).status_code == 401
            assert httpx.get(base + "/v1/models", headers=bearer, timeout=30).status_code == 200
            other = {**bearer, "Host": "box.internal"}
            assert httpx.get(base + "/v1/models", headers=other, timeout=30).status_code == 200
            evil = {**bearer, "Host": "evil.example"}
            assert httpx.get(base + "/v1/models", headers=evil, timeout=30).status_code == 403
        finally:
            stop = proxy("stop", *files)
        assert stop.returncode == 0, stop.stdout
        assert exited(pid)

    await asyncio.to_thread(scenario)


async def test_a_short_token_is_refused_at_start(running: Running, tmp_path: Path) -> None:
    policy = _policy(running, tmp_path)
    result = await asyncio.to_thread(
        proxy, *_start_args(running, tmp_path, policy), env={"ENCLAVE_PROXY_TOKEN": "tiny-tok"}
    )
    assert result.returncode == 2
    assert "token" in result.stderr
    assert "tiny-tok" not in result.stderr  # never echoed
