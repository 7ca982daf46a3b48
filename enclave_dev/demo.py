"""``enclave demo``: the whole service and a client, on this machine, in one command.

It starts the service on a free loopback port with the SIMULATED TEE and the development
engine, then acts as a client would: it verifies the RA-TLS evidence and a nonce-fresh
attestation report with the real dcap-qvl against the simulator's root (published by the
service the way a real deployment publishes nothing: real clients use Intel's root), loads a
model through the lifecycle API over OHTTP (the load token travels encrypted), verifies again to
see the model digest bound into the new evidence, sends an OHTTP-encrypted streaming chat
request and prints the answer as it arrives, shows what an eavesdropper on the gateway saw, and
shuts everything down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation.collateral import OfflineCollateral
from attestation.gpu import GpuPolicy
from attestation.policy import pinned_policy
from enclave.client import AsyncOhttpTransport, AsyncRaTlsTransport, Verifier, attest_endpoint
from enclave.client._endpoint import VerifiedEndpoint
from enclave.protocol._encap import response_nonce_size
from enclave.server import EnclaveServer
from enclave.settings import EnclaveSettings
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tinymodel import build_command, is_built

__all__ = ["DEFAULT_VLLM_VENV", "DEMO_MODEL", "DEMO_PROMPT", "main", "run_demo"]

DEMO_MODEL = "demo-model"
#: Where scripts/install-vllm-cpu puts real vLLM by default (a source checkout's root).
DEFAULT_VLLM_VENV = Path(
    os.environ.get("ENCLAVE_VLLM_VENV", Path(__file__).resolve().parents[1] / ".venv-vllm")
)
DEMO_PROMPT = "Why should a prompt only be readable inside a measured VM?"
_LOAD_TIMEOUT = 120.0
#: Real vLLM starts in 30-120 s on a small CPU machine.
_VLLM_LOAD_TIMEOUT = 600.0


@dataclass
class _Tap:
    """What an eavesdropper on the path to the gateway sees: the outer bodies, byte for byte."""

    request_bytes: int = 0
    response_bytes: int = 0
    response_pieces: int = 0
    captured: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)  # the last response's body


class _TappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, tap: _Tap) -> None:
        self._inner, self._tap = inner, tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._inner:
            self._tap.response_bytes += len(piece)
            self._tap.response_pieces += 1
            self._tap.captured += piece
            self._tap.response += piece
            yield piece

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TappedTransport(httpx.AsyncBaseTransport):
    """The outer transport, observed (the demo's stand-in for a relay operator)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, tap: _Tap) -> None:
        self._inner, self._tap = inner, tap

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self._tap.request_bytes += len(body)
        self._tap.captured += body
        response = await self._inner.handle_async_request(request)
        self._tap.response.clear()
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _TappedStream(response.stream, self._tap)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Printer:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.is_terminal = out.isatty()

    def __call__(self, text: str = "", end: str = "\n") -> None:
        self._out.write(text + end)
        self._out.flush()

    def step(self, number: int, text: str) -> None:
        self(f"\n[{number}] {text}")


def _describe(say: _Printer, endpoint: VerifiedEndpoint) -> None:
    m = endpoint.measurements
    say(f"    TCB status      {endpoint.tcb_status} (quote provider: {endpoint.quote_provider})")
    say(f"    MRTD            {m.mrtd.hex()[:48]}...")
    say(f"    RTMR0           {m.rtmr0.hex()[:48]}...")
    say(f"    TLS key SHA-256 {endpoint.spki_sha256.hex()}")
    kems = ", ".join(f"key {c.key_id}: KEM {int(c.kem_id):#06x}" for c in endpoint.key_configs)
    say(f"    OHTTP keys      {kems} (their SHA-256 is a claim in the quote)")
    if endpoint.model is None:
        say("    model           none loaded (no model claim)")
    else:
        say(f"    model           {endpoint.model.name}, {endpoint.model.digest_kind}")
        say(f"    model digest    {endpoint.model.digest.hex()}")
    for index, gpu in enumerate(endpoint.gpus):
        say(
            f"    GPU {index}           {gpu.architecture}, driver {gpu.driver_version}, VBIOS "
            f"{gpu.vbios_version}, CC {gpu.cc_mode}, {len(gpu.measurements)} measurements"
        )


def _prepare_vllm(root: Path, load_token: str, venv: Path, say: _Printer) -> EnclaveSettings:
    """Real vLLM from ``venv`` (scripts/install-vllm-cpu) with the tiny random-weight model,
    built into the venv on first use (seconds, no network)."""
    vllm = venv / "bin" / "vllm"
    if not vllm.exists():
        raise RuntimeError(f"no vLLM at {vllm}: run scripts/install-vllm-cpu (or pass --vllm-venv)")
    built = venv / "enclave-tiny-model"
    if not is_built(built):
        say(f"    building the tiny random-weight model into {built} (once)")
        argv = build_command(venv / "bin" / "python", built)  # our own paths, no shell
        subprocess.run(argv, check=True, capture_output=True)  # noqa: S603
    models = root / "models"
    model = models / DEMO_MODEL
    model.mkdir(parents=True)
    for item in built.iterdir():
        if item.is_file():
            shutil.copyfile(item, model / item.name)
    (models / "models.toml").write_text(
        f'[models.{DEMO_MODEL}]\nmax_model_len = 512\ndtype = "float32"\n'
        'extra_args = ["--enforce-eager"]\n'
    )
    # vLLM's CPU build reserves this much memory (GiB) for its KV cache; the tiny model needs 1.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    return local_settings(
        root,
        load_token=load_token,
        engine_command=(str(vllm),),
        insecure_dev_engine=False,
        engine_env_allowlist=("VLLM_CPU_KVCACHE_SPACE", "VLLM_NO_USAGE_STATS"),
        load_timeout_seconds=_VLLM_LOAD_TIMEOUT,
        log_level="WARNING",
        gpu="simulated",
        insecure_allow_simulated_gpu=True,
    )


def _prepare(root: Path, load_token: str) -> EnclaveSettings:
    model = root / "models" / DEMO_MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"architectures": ["DevEngineDemo"]}))
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return local_settings(
        root,
        load_token=load_token,
        engine_flags=("--dev-load-seconds", "2", "--dev-tokens-per-second", "40"),
        log_level="WARNING",
        gpu="simulated",
        insecure_allow_simulated_gpu=True,
    )


async def _wait_ready(
    client: httpx.AsyncClient, say: _Printer, timeout: float
) -> dict[str, object]:
    """Poll the status, drawing ``proxy_progress`` as a bar (redrawn on a terminal, a line per
    quarter otherwise)."""
    deadline = time.monotonic() + timeout
    shown = -1
    while time.monotonic() < deadline:
        status: dict[str, object] = (await client.get("/v1/models/status")).json()
        progress = float(str(status.get("proxy_progress", 0.0)))
        step = int(progress * 30) if say.is_terminal else int(progress * 4) * 25
        if step != shown:
            shown = step
            bar = "#" * int(progress * 30)
            line = f"    [{bar:.<30}] {progress:4.0%} {status['proxy_status']}"
            say("\r" + line if say.is_terminal else line, end="" if say.is_terminal else "\n")
        if status["proxy_status"] in ("ready", "error"):
            if say.is_terminal:
                say()
            if status["proxy_status"] == "error":
                raise RuntimeError(f"the model failed to load: {status.get('error')}")
            return status
        await asyncio.sleep(0.1)
    raise RuntimeError("the model did not become ready in time")


async def _stream_chat(client: httpx.AsyncClient, say: _Printer) -> str:
    body = {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": DEMO_PROMPT}],
        "stream": True,
        "max_tokens": 48,
    }
    text: list[str] = []
    say("    ", end="")
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"chat failed: HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            for choice in json.loads(line[len("data: ") :]).get("choices", []):
                piece = (choice.get("delta") or {}).get("content") or ""
                text.append(piece)
                say(piece, end="")
    say()
    return "".join(text)


async def _client_side(server: EnclaveServer, token: str, say: _Printer) -> None:
    url = f"https://127.0.0.1:{server.bound_port}"
    simulated = server.simulated
    if simulated is None or simulated.bundle_dir is None:
        raise RuntimeError("the demo needs the simulated TEE's published root and collateral")
    bundle = simulated.bundle_dir
    # The demo started this simulated TD, so it knows the measurements to pin; a real client
    # gets them from `enclave verify URL --save-policy` or deploy/image/measure.py.
    policy = dataclasses.replace(
        pinned_policy(
            simulated.simulator.measurements.registers(),
            note="the demo's simulated TD (its measurements are the simulator's defaults)",
        ),
        gpu=GpuPolicy(required_count=1),
        # The demo's service declares its development engine and simulated TEE in its claims;
        # a policy refuses such a service unless it accepts them by name (INSECURE).
        insecure_accept_service=frozenset(server.service.insecure),
    )
    gpu_root = bundle.parent / "simulated-gpu" / "root_ca.pem"
    verifier = Verifier(
        OfflineCollateral(bundle / "collateral.json"),
        policy=policy,
        insecure_root_ca_der=(bundle / "root_ca.der").read_bytes(),
        insecure_gpu_root_der=x509.load_pem_x509_certificate(gpu_root.read_bytes()).public_bytes(
            serialization.Encoding.DER
        ),
    )

    say.step(1, f"Verifying the service at {url}: RA-TLS certificate + fresh attestation report")
    say("    (real dcap-qvl, against the SIMULATED root in " + str(bundle) + ")")
    say("    (policy: MRTD, RTMR0-3 and MRCONFIGID pinned to the simulated TD's values;")
    say("     one GPU required, verified against the SIMULATED GPU root in " + str(gpu_root) + ";")
    accepted = ", ".join(sorted(policy.insecure_accept_service))
    say(f"     it accepts what the service declares about itself: {accepted})")
    endpoint = await attest_endpoint(verifier, url)
    _describe(say, endpoint)

    tap = _Tap()
    outer = _TappedTransport(AsyncRaTlsTransport(verifier), tap)
    ohttp = AsyncOhttpTransport(url, verifier, outer_transport=outer)
    async with httpx.AsyncClient(transport=ohttp, base_url=url, timeout=60.0) as client:
        say.step(2, f"Loading {DEMO_MODEL!r} through the lifecycle API, over OHTTP")
        say("    (the load token travels inside the encrypted request)")
        response = await client.post(
            "/v1/models/load",
            json={"model": DEMO_MODEL},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code not in (200, 202):
            raise RuntimeError(f"load refused: HTTP {response.status_code}")
        status = await _wait_ready(client, say, server.settings.model_manager.load_timeout_seconds)
        say(f"    ready: {status['digest_kind']} digest {status['loaded_model_digest']}")

        say.step(3, "Verifying again: the new evidence binds the model digest")
        endpoint = await attest_endpoint(verifier, url)
        _describe(say, endpoint)
        if endpoint.model_digest_hex != status["loaded_model_digest"]:
            raise RuntimeError("the attested model digest differs from the status document")

        say.step(4, "Streaming a chat completion, encrypted end to end (chunked OHTTP, X-Wing)")
        say(f"    prompt: {DEMO_PROMPT}")
        tap.request_bytes = tap.response_bytes = tap.response_pieces = 0
        tap.captured.clear()
        answer = await _stream_chat(client, say)

    say.step(5, "What an eavesdropper on the path to the gateway saw")
    say(f"    request:  {tap.request_bytes} bytes of ciphertext")
    say(f"    response: {tap.response_bytes} bytes in {tap.response_pieces} pieces")
    say(f"    first bytes: {bytes(tap.captured[:24]).hex()}")
    say("    (the 7-byte OHTTP header: key ID, KEM, KDF, AEAD; then the KEM output and ciphertext)")
    leaked = DEMO_PROMPT.encode() in tap.captured or (answer and answer.encode() in tap.captured)
    say(f"    prompt or answer visible in those bytes: {'YES (bug!)' if leaked else 'no'}")
    if leaked:
        raise RuntimeError("plaintext was visible on the wire")
    _describe_sizes(say, tap, endpoint, server.settings.service.padding_bucket)


def _chunk_lengths(body: bytes, nonce_size: int) -> list[int]:
    """What a relay reads of a chunked OHTTP response: each sealed chunk's length (the varint
    in front of it; the final chunk, after a zero length, runs to the end)."""
    lengths, at = [], nonce_size
    while at < len(body):
        size = 1 << (body[at] >> 6)
        length = int.from_bytes(bytes([body[at] & 0x3F]) + body[at + 1 : at + size], "big")
        at += size
        if length == 0:
            lengths.append(len(body) - at)
            break
        lengths.append(length)
        at += length
    return lengths


def _runs(values: list[int]) -> str:
    """``[274, 274, 274, 530]`` as ``274 x3, 530``."""
    out: list[str] = []
    for value in values:
        if out and out[-1].split(" ")[0] == str(value):
            count = int(out[-1].split("x")[1]) + 1 if "x" in out[-1] else 2
            out[-1] = f"{value} x{count}"
        else:
            out.append(str(value))
    return ", ".join(out)


def _describe_sizes(say: _Printer, tap: _Tap, endpoint: VerifiedEndpoint, bucket: int) -> None:
    """The sizes of the answer's chunks, and why they say nothing about its tokens."""
    config = endpoint.key_configs[0]
    lengths = _chunk_lengths(bytes(tap.response), response_nonce_size(config.suites()[0]))
    events = lengths[1:-1]  # the head first, the final chunk last
    say(f"    chunk sizes a relay read: {_runs(lengths)}")
    if not bucket:
        say("    (padding is OFF, insecure_no_stream_padding: each size is its token's length plus")
        say("     a constant, so the relay reads every token's length)")
        return
    tag = 16 + 2  # the AEAD tag and the Binary HTTP chunk's 2-byte length
    whole = all((length - tag) % bucket == 0 for length in events)
    single = sum(length == bucket + tag for length in events)
    say(f"    chunks carrying events are whole {bucket}-byte buckets: {'yes' if whole else 'NO'}")
    say(f"    the one-token chunks ({single} of {len(events)}) are all {bucket + tag} bytes: equal")
    say("    (why: the service pads each event to the bucket inside the encryption, with an SSE")
    say("     comment line that every parser ignores; so a size says nothing of a token's length,")
    say("     only the number of chunks, their timing and the total in buckets remain)")
    if not whole:
        raise RuntimeError("a streamed chunk was not padded to the bucket")


async def run_demo(
    out: TextIO = sys.stdout, *, engine: str = "dev", vllm_venv: Path | None = None
) -> int:
    """The demo on the development engine (``engine="dev"``), or on real vLLM from
    ``vllm_venv`` (default: ``.venv-vllm`` of the source checkout) with a random-weight model."""
    say = _Printer(out)
    say("enclave demo: the service and a client on this machine")
    say("NOTE: SIMULATED TEE. Its quotes are signed by a simulated Intel-like root; they show the")
    say("      protocol working end to end and prove nothing about this machine.")
    say("NOTE: SIMULATED GPU. Its attestation reports are signed by a simulated NVIDIA-like root.")
    if engine == "vllm":
        say("NOTE: REAL vLLM, with a tiny model whose weights are RANDOM: the engine path is real,")
        say("      the answer is arbitrary tokens, not language.")
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="enclave-demo-") as tmp:
        if engine == "vllm":
            venv = vllm_venv if vllm_venv is not None else DEFAULT_VLLM_VENV
            settings = _prepare_vllm(Path(tmp), token, venv, say)
        else:
            settings = _prepare(Path(tmp), token)
        async with serve_locally(settings) as server:
            try:
                await _client_side(server, token, say)
            finally:
                say.step(6, "Shutting down (the engine is stopped, every process reaped)")
    say("\ndone.")
    return 0


def main(*, engine: str = "dev", vllm_venv: Path | None = None) -> int:
    """``enclave demo``: the demo on stdout; 0 when it ran through, 1 when it failed."""
    # The service's own warnings (simulated TEE) are part of the story; keep the rest quiet.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        return asyncio.run(run_demo(sys.stdout, engine=engine, vllm_venv=vllm_venv))
    except Exception as exc:
        print(f"\nenclave demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
