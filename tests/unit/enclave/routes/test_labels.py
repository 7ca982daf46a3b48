"""No request content ever becomes a metric label (the app end to end)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from tests.unit.enclave.routes.conftest import METRICS_AUTH, METRICS_TOKEN, Harness

CANARY = "canary-label-0b5e55ed"


async def test_user_data_never_becomes_a_label(
    make_harness: Callable[..., Awaitable[Harness]],
) -> None:
    harness = await make_harness(metrics_token=METRICS_TOKEN)
    await harness.load()
    client = harness.client
    body = {"model": CANARY, "messages": [{"role": "user", "content": CANARY}], "stream": True}
    await client.post("/v1/chat/completions", json=body)
    await client.post("/v1/chat/completions", content=json.dumps(body), headers={"x-r": CANARY})
    await client.get(f"/{CANARY}", params={CANARY: CANARY})
    await client.request(CANARY.upper()[:10], "/v1/models")
    await client.post("/v1/models/load", json={"model": CANARY})
    text = (await client.get("/metrics", headers=METRICS_AUTH)).text
    assert CANARY not in text
    assert CANARY.upper()[:10] not in text
