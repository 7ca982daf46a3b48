"""Fuzz every JSON route in-process (ASGI calls, no sockets): ten thousand seeded bodies per
route, mutated from valid ones or built as random JSON documents. Each answer must be a success
or a typed refusal: a 4xx with an error code of the vocabulary, or 503 ``model_not_ready`` once
a fuzzed unload took the model away; never a 500, never a log line at ERROR or above."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from enclave.protocol.api import ERRORS
from tests.fuzz._corpus import CASES, cases
from tests.unit.enclave.routes.conftest import MODEL, Harness

MakeHarness = Callable[..., Awaitable[Harness]]
_KEYS = ("model", "stream", "messages", "prompt", "input", "max_tokens", "role", "content", "n")
#: Deep enough to exhaust the JSON parser's recursion (issue 12 point 6), small enough (4000
#: bytes) for the lifecycle routes' body limit.
_DEEP = b"[" * 2000 + b"]" * 2000
_SEEDS: dict[str, list[bytes]] = {
    "/v1/chat/completions": [
        json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode(),
        json.dumps({"model": MODEL, "stream": True, "messages": [], "max_tokens": 3}).encode(),
        _DEEP,
    ],
    "/v1/completions": [
        json.dumps({"model": MODEL, "prompt": "hi", "stream": False}).encode(),
        _DEEP,
    ],
    "/v1/embeddings": [json.dumps({"model": MODEL, "input": ["a", "b"]}).encode(), _DEEP],
    "/v1/models/load": [json.dumps({"model": MODEL}).encode(), _DEEP],
    "/v1/models/unload": [json.dumps({"model": MODEL}).encode(), _DEEP],
}


def _value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**63, 1e308, float("-0"), 3))
    if kind in (3, 4):
        return rng.choice((MODEL, "", "x" * rng.randrange(300), "\u0000\ud7ff\u202e", "../etc"))
    if kind == 5:
        return rng.random()
    if kind in (6, 7):
        keys = rng.sample(_KEYS, rng.randrange(len(_KEYS)))
        return {key: _value(rng, depth + 1) for key in keys}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _bodies(path: str) -> list[bytes]:
    """Half mutated valid bodies, half random documents (a quarter of those with the model)."""
    mutated = list(cases(path, _SEEDS[path], CASES // 2))
    rng = random.Random(path + "/documents")
    documents = []
    for _ in range(CASES - len(mutated)):
        document = _value(rng, 0)
        if isinstance(document, dict) and rng.randrange(4) == 0:
            document["model"] = MODEL
        documents.append(json.dumps(document).encode())
    return mutated + documents


async def _post(app: Any, path: str, body: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app as a server would make it."""
    sent = False
    status, chunks = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    headers = [(b"content-type", b"application/json"), (b"host", b"enclave.test")]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("198.51.100.20", 40000),
        "server": ("127.0.0.1", 8443),
    }
    await app(scope, receive, send)
    return status, b"".join(chunks)


def _typed(status: int, body: bytes) -> str | None:
    """The error code of a refusal, if the body is one of the vocabulary's."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) and code in ERRORS else None


@pytest.mark.parametrize("path", sorted(_SEEDS))
async def test_a_json_route_answers_every_body_with_success_or_a_typed_refusal(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    harness = await make_harness()
    await harness.load()
    caplog.clear()
    statuses: dict[int, int] = {}
    for index, body in enumerate(_bodies(path)):
        status, answer = await _post(harness.app, path, body)
        statuses[status] = statuses.get(status, 0) + 1
        refused = status >= 400
        code = _typed(status, answer) if refused else None
        allowed = status < 500 or code == "model_not_ready"
        if not allowed or (refused and code is None):
            raise AssertionError(
                f"{path} case {index}: {status} {answer[:200]!r} for {body[:300]!r} "
                f"({len(body)} bytes)"
            )
        errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
        if errors:
            raise AssertionError(f"{path} case {index} logged {errors[0].getMessage()}")
        caplog.clear()
    assert sum(statuses.values()) == CASES
    assert any(status < 300 for status in statuses)  # some bodies got through to the work
