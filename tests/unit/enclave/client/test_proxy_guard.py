"""The proxy's door (enclave.client._proxy_guard) on its own: what a Host may be, and each
check disabled in turn lets its attack through (so no check's test proves nothing). The same
attacks against the real proxy and service are in tests/integration/client/test_proxy_guard.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from enclave.client._proxy_guard import ProxyGuard, host_allowed

TOKEN = "door-token-8f2a6c1d9e3b"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8787", True),
        ("127.255.0.9:1", True),
        ("[::1]", True),
        ("[::1]:8787", True),
        ("[::ffff:127.0.0.1]:8787", True),
        ("localhost", True),
        ("LOCALHOST:8787", True),
        ("localhost.", True),
        ("a.b.localhost:9", True),
        ("configured.example", True),
        ("configured.example:443", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("evil-localhost", False),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("[::]:8787", False),
        ("[::1", False),
        ("[::1]x", False),
        ("127.0.0.1:80x", False),
        ("2130706433", False),
        ("", False),
        (None, False),
    ],
)
def test_host_values(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"configured.example"})) is allowed


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    seen = [name for name, _ in scope["headers"]]
    body = b"reached " + b",".join(seen)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _client(**kwargs: Any) -> httpx.AsyncClient:
    guard = ProxyGuard(_inner, anthropic_paths=lambda path: path == "/v1/messages", **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://127.0.0.1")


async def test_the_token_header_is_not_passed_on_and_shapes_follow_the_route() -> None:
    async with _client(token=TOKEN) as client:
        passed = await client.post(
            "/v1/chat/completions", json={}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert passed.status_code == 200
        assert passed.text.startswith("reached ")
        assert b"authorization" not in passed.content
        kept = await client.post(
            "/v1/messages",
            json={},
            headers={"x-api-key": TOKEN, "Authorization": "Bearer for-the-service"},
        )
        assert kept.status_code == 200
        assert b"authorization" in kept.content
        assert b"x-api-key" not in kept.content
        refused = await client.post("/v1/messages", json={})
        assert refused.json() == {
            "type": "error",
            "error": {
                "type": "authentication_error",
                "message": "the proxy's access token is required (ENCLAVE_PROXY_TOKEN)",
            },
        }
        refused = await client.post("/v1/chat/completions", json={})
        assert refused.json()["error"]["code"] == "proxy_token_required"


#: (the method disabled, what the guard is given, the attack: request arguments)
MUTATIONS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "host": ("_host_ok", {}, {"headers": {"Host": "evil.example"}}),
    "origin": ("_origin_ok", {}, {"headers": {"Origin": "https://evil.example"}}),
    "token": (
        "_token_ok",
        {"token": TOKEN},
        {"headers": {"Authorization": "Bearer not-the-token"}},
    ),
    "content_type": ("_type_ok", {}, {"headers": {"Content-Type": "text/plain"}}),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
async def test_each_check_disabled_lets_its_attack_through(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    method, options, attack = MUTATIONS[name]
    headers = {"Content-Type": "application/json", **attack["headers"]}
    async with _client(**options) as client:
        refused = await client.post("/v1/chat/completions", content=b"{}", headers=headers)
        assert refused.status_code in (401, 403, 415)
        monkeypatch.setattr(ProxyGuard, method, lambda *_: True)
        passed = await client.post("/v1/chat/completions", content=b"{}", headers=headers)
    assert passed.status_code == 200, (name, passed.text)
