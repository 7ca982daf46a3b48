"""``enclave serve`` past its shutdown grace (issue 12, point 9): streams still open when the
grace is over end with the in-stream error event (on OHTTP, then the final chunk), nothing is
logged with a traceback, and a grace of 0 or a fraction of a second is honoured (it used to
become "wait forever": ``int(grace) or None``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from enclave.protocol import bhttp
from enclave.protocol.ohttp import decode_key_configs
from enclave.protocol.padding import strip_event_padding
from tests.integration.server._raw import RawClient
from tests.integration.server.conftest import chat_request, encapsulate
from tests.integration.server.test_serve_process import free_port, serve_command

pytestmark = pytest.mark.slow

TOKEN = "shutdown-test-load-token-6f1d0c2b9e8a"
MODELS_TOML = """
[models.slow]
path = "tiny"
extra_args = ["--dev-tokens-per-second", "4"]
"""
LONG = 400  # tokens: 100 s at 4 per second, far past any grace here


def data_events(text: bytes) -> list[bytes]:
    return [e for e in strip_event_padding(text).split(b"\n\n") if e.startswith(b"data: ")]


async def plain_stream(client: httpx.AsyncClient, started: asyncio.Event) -> list[bytes]:
    body = json.loads(chat_request("plain", model="slow", max_tokens=LONG, ignore_eos=True).content)
    received = bytearray()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            received += piece
            if data_events(bytes(received)):
                started.set()
    return data_events(bytes(received))


async def ohttp_stream(
    client: httpx.AsyncClient, started: asyncio.Event
) -> tuple[bhttp.Response, list[bytes]]:
    config = decode_key_configs((await client.get("/.well-known/ohttp-keys")).content)[0]
    sealed, decoder = encapsulate(
        config, chat_request("sealed", model="slow", max_tokens=LONG, ignore_eos=True)
    )
    plaintext = bytearray()
    async with client.stream(
        "POST",
        "/.well-known/ohttp-gateway",
        content=sealed,
        headers={"content-type": "message/ohttp-chunked-req"},
    ) as response:
        assert response.status_code == 200
        async for piece in response.aiter_raw():
            for opened in decoder.feed(piece):
                plaintext += opened
            if b"data: " in plaintext:
                started.set()
    plaintext += decoder.finish()  # raises unless the final chunk came
    inner = bhttp.decode_response(bytes(plaintext))
    return inner, data_events(inner.content)


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[str]) -> None:
    async with asyncio.timeout(60):
        while True:
            assert process.poll() is None
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        response = await client.post(
            "/v1/models/load",
            json={"model": "slow"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        response.raise_for_status()
        while (await client.get("/v1/models/status")).json()["proxy_status"] != "ready":
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("grace", ["0", "0.5"])
async def test_streams_open_past_the_grace_end_with_the_error_event(tmp_path: Path, grace: str):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "models" / "models.toml").write_text(MODELS_TOML)
    port = free_port()
    command = serve_command(tmp_path, port, "--tee", "simulated", "--insecure-allow-simulated-tee")
    command[command.index("--shutdown-grace") + 1] = grace
    process = subprocess.Popen(
        command,
        env={**os.environ, "LOAD_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{port}", verify=False, timeout=60
        ) as client:
            await wait_ready(client, process)
            started = [asyncio.Event(), asyncio.Event()]
            plain = asyncio.create_task(plain_stream(client, started[0]))
            sealed = asyncio.create_task(ohttp_stream(client, started[1]))
            slow_body = await RawClient.open(port)  # still sending its body at the end
            await slow_body.head("/v1/chat/completions", "application/json", 100)
            await slow_body.send(b"{")
            async with asyncio.timeout(30):
                await asyncio.gather(*(event.wait() for event in started))
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                plain_events = await plain
                inner, sealed_events = await sealed
                status, _, cut_body = await slow_body.response(timeout=30)
            await slow_body.aclose()
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output = process.stdout.read() if process.stdout is not None else ""
        if process.stdout is not None:
            process.stdout.close()
    for events in (plain_events, sealed_events):
        assert len(events) < LONG  # cut short, not drained to the end
        assert events[-1] == b"data: [DONE]"
        assert events[-2].startswith(b'data: {"enclave_receipt":')  # signed, after the error
        error = json.loads(events[-3][len(b"data: ") :])["error"]
        assert error["code"] == "model_unloaded"
    assert inner.status == 200
    assert (status, json.loads(cut_body)["error"]["code"]) == (503, "service_stopping")
    assert "request cut at shutdown: CancelledError" in output
    assert "shutdown grace over" in output
    assert "Traceback" not in output, output
