"""The prefix-cache salt (CVE-2025-46570): the service sets ``cache_salt`` on every engine
request, fresh per request unless an isolation key names a shared domain; a client's own
``cache_salt`` never reaches the engine. Real vLLM's cache is tested in
tests/integration/vllm/test_vllm.py (``test_prefix_cache_is_isolated_between_domains``)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

import pytest

from enclave._cache_salt import CacheSalter, salted_body
from tests.unit.enclave.routes.conftest import MODEL, Harness

MakeHarness = Callable[..., Awaitable[Harness]]
CHAT = "/v1/chat/completions"
KEY_A = "domain-a-secret-0123456789"
KEY_B = "domain-b-secret-0123456789"
HEX64 = re.compile(r"[0-9a-f]{64}")


def body(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


async def ready(make_harness: MakeHarness) -> Harness:
    harness = await make_harness()
    await harness.load()
    return harness


async def salts(harness: Harness, *requests: tuple[bytes, dict[str, str]]) -> list[str]:
    before = len(harness.engine.bodies)
    for content, headers in requests:
        answer = await harness.client.post(
            CHAT, content=content, headers={"content-type": "application/json", **headers}
        )
        assert answer.status_code == 200, answer.text
    sent = [json.loads(raw) for raw in harness.engine.bodies[before:]]
    return [document["cache_salt"] for document in sent]


def raw(**extra: object) -> bytes:
    return json.dumps(body(**extra)).encode()


async def test_every_request_gets_a_fresh_salt(make_harness: MakeHarness) -> None:
    harness = await ready(make_harness)
    first, second = await salts(harness, (raw(), {}), (raw(), {}))
    assert HEX64.fullmatch(first)
    assert HEX64.fullmatch(second)
    assert first != second


async def test_a_client_cache_salt_never_reaches_the_engine(make_harness: MakeHarness) -> None:
    """Regression (CVE-2025-46570): a client that copies a victim's salt shares its cache."""
    harness = await ready(make_harness)
    victim = "victim-salt"
    duplicated = b'{"model":"tiny","cache_salt":"a","messages":[],"cache_salt":"victim-salt"}'
    sent = await salts(
        harness,
        (raw(cache_salt=victim), {}),
        (duplicated, {}),
        (raw(cache_salt=victim), {"x-cache-isolation-key": KEY_A}),
    )
    assert victim not in sent
    assert "a" not in sent
    for document in harness.engine.bodies:
        assert document.count(b"cache_salt") == 1


async def test_one_isolation_key_shares_a_salt_and_another_does_not(
    make_harness: MakeHarness,
) -> None:
    harness = await ready(make_harness)
    a1, a2, b1, none = await salts(
        harness,
        (raw(), {"x-cache-isolation-key": KEY_A}),
        (raw(stream=False), {"x-cache-isolation-key": KEY_A}),
        (raw(), {"x-cache-isolation-key": KEY_B}),
        (raw(), {}),
    )
    assert a1 == a2
    assert len({a1, b1, none}) == 3
    assert KEY_A not in a1
    # Keyed with the service's own secret: another service makes another salt of the key.
    assert CacheSalter().salt(KEY_A) != a1
    # The key itself is not forwarded.
    assert all("x-cache-isolation-key" not in r.headers for r in harness.engine.requests)


@pytest.mark.parametrize(
    "key", ["short-key", "x" * 257, "sixteen chars ok with space", "caf\u00e9-0123456789abcdef"]
)
async def test_a_malformed_isolation_key_is_refused(make_harness: MakeHarness, key: str) -> None:
    harness = await ready(make_harness)
    answer = await harness.client.post(
        CHAT, json=body(), headers={"x-cache-isolation-key": key.encode("latin-1")}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_cache_isolation_key"
    assert key not in answer.text
    assert harness.engine.bodies == []


@pytest.mark.parametrize(
    "content",
    [
        b'  \n{"model": "tiny", "n": 1}',
        b'{"model":"tiny","cache_salt":null}',
        '\ufeff{"model": "tiny"}'.encode(),
        '{"model": "tiny"}'.encode("utf-16"),
        b'{"model": "tiny", "x": "\\ud800", "y": NaN}',
    ],
)
def test_the_salted_body_is_the_document_with_the_salt(content: bytes) -> None:
    document = json.loads(content)
    salted = json.loads(salted_body(content, document, "s" * 64))
    assert salted.pop("cache_salt") == "s" * 64
    document.pop("cache_salt", None)
    assert json.dumps(salted) == json.dumps(document)
