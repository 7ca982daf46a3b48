"""Issue 12 point 6: a deeply nested JSON body is bad input (400), never a 500 with a
``RecursionError`` traceback, on the inference routes and the lifecycle routes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest

from tests.unit.enclave.routes.conftest import Harness

MakeHarness = Callable[..., Awaitable[Harness]]
INFERENCE = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
LIFECYCLE = ("/v1/models/load", "/v1/models/unload")  # bodies of at most 4 KiB there


def arrays(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def objects(depth: int) -> bytes:
    return b'{"model":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        *((path, arrays(100_000)) for path in INFERENCE),
        *((path, objects(50_000)) for path in INFERENCE),
        *((path, arrays(2000)) for path in (*INFERENCE, *LIFECYCLE)),
        *((path, objects(1500)) for path in INFERENCE),
    ],
    ids=lambda value: value if isinstance(value, str) else f"{len(value)}B",
)
async def test_deeply_nested_json_is_a_400_without_a_traceback(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    harness = await make_harness()
    caplog.set_level(logging.DEBUG)
    response = await harness.client.post(
        path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert "RecursionError" not in caplog.text
    assert "Traceback" not in caplog.text
    assert all(record.levelno < logging.ERROR for record in caplog.records)
    assert harness.engine.requests == []
