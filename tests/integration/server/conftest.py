"""One real EnclaveServer for the module: RA-TLS on a free loopback port, the simulated TEE
(verified with the real dcap-qvl against the simulator's root), the development engine as a
child process, and a client made of the sans-IO core plus httpx."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from attestation.collateral import Collateral
from attestation.policy import DEFAULT_POLICY, Policy
from attestation.ratls import parse_certificate
from attestation.verify import VerifiedEvidence, verify_evidence
from enclave.protocol import bhttp
from enclave.protocol.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from enclave.protocol.ohttp import KeyConfig, decode_key_configs
from enclave.protocol.padding import strip_event_padding
from enclave.server import EnclaveServer
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator

TOKEN = "integration-load-token-2a7c9e1f05b3"
METRICS_TOKEN = "integration-metrics-token-6b0d3f8e9a21c4"
#: The scraper's credentials (the metrics routes are served only to a bearer of the token).
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
CANARY = "canary-5b9f2e71-never-logged"
MODELS_TOML = """
[models.crashy]
path = "tiny"
extra_args = ["--dev-crash-after-chunks", "3"]

[models.slow]
path = "tiny"
extra_args = ["--dev-tokens-per-second", "20"]
"""


@dataclass
class Running:
    server: EnclaveServer
    simulator: Simulator
    port: int
    tmp: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=False, timeout=30.0, **kwargs)


def tls_client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # trust comes from the evidence
    return context


async def handshake_certificate(port: int) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls_client_context())
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return der


async def verified_certificate(running: Running) -> VerifiedEvidence:
    parsed = parse_certificate(await handshake_certificate(running.port))
    return verify_evidence(
        parsed.evidence,
        collateral=Collateral.from_json(running.simulator.collateral_json()),
        peer_spki_der=parsed.spki_der,
        policy=accepting_policy(running),
        insecure_root_ca_der=running.simulator.root_ca_der,
    )


def accepting_policy(running: Running) -> Policy:
    """The default policy, accepting exactly the insecure settings this local service declares
    (the development engine and the simulated TEE)."""
    accepted = frozenset(running.server.service.insecure)
    return dataclasses.replace(DEFAULT_POLICY, insecure_accept_service=accepted)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    (tmp / "models" / "models.toml").write_text(MODELS_TOML)
    settings = local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=("--dev-load-seconds", "0.3"),
        metrics_token=METRICS_TOKEN,
        shutdown_grace_seconds=5,
        restart_backoff_initial_seconds=0.2,
    )
    simulator = Simulator.create()
    async with serve_locally(settings, simulator=simulator) as server:
        assert server.bound_port is not None
        yield Running(server, simulator, server.bound_port, tmp)


async def engine_faults(running: Running, **changes: object) -> None:
    """Change the development engine's live fault switches (``POST /dev/faults``)."""
    socket_path = running.server.settings.model_manager.engine_socket_path()
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as engine:
        response = await engine.post("/dev/faults", json=changes, timeout=10)
        assert response.status_code == 200, response.text


async def load_model(running: Running, name: str) -> dict[str, Any]:
    async with running.client() as client:
        response = await client.post(
            "/v1/models/load", json={"model": name}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code in (200, 202), response.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status: dict[str, Any] = (await client.get("/v1/models/status")).json()
            if status["proxy_status"] == "ready" and status["loaded_model"] == name:
                return status
            assert status["proxy_status"] != "error", status
            await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never became ready")


async def key_configs(running: Running) -> tuple[KeyConfig, ...]:
    async with running.client() as client:
        return decode_key_configs((await client.get("/.well-known/ohttp-keys")).content)


def chat_request(prompt: str, model: str = "tiny", **extra: Any) -> bhttp.Request:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": 16,
        **extra,
    }
    return bhttp.Request(
        b"POST",
        b"https",
        b"enclave",
        b"/v1/chat/completions",
        headers=(
            (b"content-type", b"application/json"),
            (b"date", formatdate(time.time(), usegmt=True).encode()),
        ),
        content=json.dumps(body).encode(),
    )


def encapsulate(config: KeyConfig, request: bhttp.Request) -> tuple[bytes, ChunkedResponseDecoder]:
    encoder = ChunkedRequestEncoder(config)
    body = encoder.header + encoder.seal_chunk(
        bhttp.encode_request(request, indeterminate=True), final=True
    )
    return body, encoder.response_decoder()


@dataclass
class OhttpResult:
    status: int
    outer_bytes: bytes
    plaintext: bytes  # the inner Binary HTTP response
    complete: bool


async def post_ohttp(
    client: httpx.AsyncClient,
    body: bytes,
    decoder: ChunkedResponseDecoder,
    *,
    opened: asyncio.Event | None = None,
) -> OhttpResult:
    """POST an encapsulated request and decrypt the answer; ``opened`` is set as soon as the
    first piece of the inner response has been decrypted (the stream is provably open)."""
    outer = bytearray()
    plaintext = bytearray()
    async with client.stream(
        "POST",
        "/.well-known/ohttp-gateway",
        content=body,
        headers={"content-type": "message/ohttp-chunked-req", "incremental": "?1"},
    ) as response:
        if response.status_code != 200:
            return OhttpResult(response.status_code, await response.aread(), b"", False)
        async for piece in response.aiter_raw():
            outer += piece
            for piece_plaintext in decoder.feed(piece):
                plaintext += piece_plaintext
                if opened is not None:
                    opened.set()
    plaintext += decoder.finish()
    return OhttpResult(200, bytes(outer), bytes(plaintext), True)


def sse_text(content: bytes) -> str:
    """The concatenated delta contents of an OpenAI chat stream."""
    text = []
    for event in strip_event_padding(content).split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        data = json.loads(event[len(b"data: ") :])
        for choice in data.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)
