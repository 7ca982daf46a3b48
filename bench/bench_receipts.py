"""What receipts cost: CPU per request and bytes added per answer.

1. In isolation (one process, CPU time from ``time.process_time``): signing one receipt
   (Ed25519 over the JCS document, the envelope encoded), hashing a streamed answer's lines
   (``SseDataDigest``, 200 chat chunks of a typical size) and attaching the member to a whole
   answer; and the client's offline check of the signature.
2. Through the real service (in-process ``EnclaveServer``, simulated TEE, development engine),
   side by side in one run: the same requests with receipts on and off (``service.receipts``
   set to None), interleaved in rounds; CPU of this process (service and client; the engine is
   another process) per request from ``/proc/self/stat`` via ``time.process_time``; the ratio
   is the figure, not the absolute times, which other load on the machine moves.
3. Bytes: the receipt event of a stream and the header plus member of a whole answer.

Prints figures; asserts nothing. Run: python3 bench/bench_receipts.py [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from attestation.evidence import ModelClaim
from attestation.receipt import ReceiptSigner, SseDataDigest, attach_member, decode_receipt
from enclave.client import AsyncRaTlsTransport, Verifier
from enclave_dev.local import serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import StaticCollateral, server_settings

MODEL = ModelClaim("tiny", "manifest-sha256", hashlib.sha256(b"m").digest())
CHUNK = (
    b'data: {"id":"chatcmpl-0123456789abcdef01234567","object":"chat.completion.chunk",'
    b'"created":1796688000,"model":"tiny","choices":[{"index":0,"delta":{"content":" word"},'
    b'"logprobs":null,"finish_reason":null}]}\n\n'
)


def cpu_per_call(function: object, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            function()  # type: ignore[operator]
        best = min(best, time.process_time() - started)
    return best / calls


def isolated() -> dict[str, float]:
    signer = ReceiptSigner()

    def sign() -> object:
        return signer.sign(
            route="/v1/chat/completions",
            request_sha256=bytes(32),
            response_sha256=bytes(32),
            response_hash="sse-lines",
            model=MODEL,
            generation=1,
            time=1796688000,
            quote_sha256=bytes(32),
        )

    stream = CHUNK * 200

    def digest() -> bytes:
        d = SseDataDigest()
        for at in range(0, len(stream), len(CHUNK)):
            d.update(stream[at : at + len(CHUNK)])
        return d.digest()

    receipt = sign()
    body = b'{"id":"x","choices":[{"message":{"content":"' + b"w" * 2000 + b'"}}]}'
    return {
        "sign_us": cpu_per_call(sign, 2000) * 1e6,
        "sse_digest_200_events_us": cpu_per_call(digest, 200) * 1e6,
        "attach_member_2k_body_us": cpu_per_call(lambda: attach_member(body, receipt), 2000)  # type: ignore[arg-type]
        * 1e6,
        "verify_signature_us": cpu_per_call(
            lambda: decode_receipt(receipt.encoded).verify_signature(),  # type: ignore[attr-defined]
            2000,
        )
        * 1e6,
        "receipt_file_bytes": len(receipt.encoded),  # type: ignore[attr-defined]
    }


async def through_service(requests: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-receipts-"))
    simulator = Simulator.create()
    async with serve_locally(server_settings(tmp), simulator=simulator) as server:
        from tests.integration.client.conftest import Running

        running = Running(server, simulator, server.bound_port or 0, tmp)
        await running.load_model()
        issuer = server.service.receipts
        verifier = Verifier(
            StaticCollateral(simulator),
            policy=running.policy(),
            insecure_root_ca_der=simulator.root_ca_der,
        )
        cpu = {"on": 0.0, "off": 0.0}
        sizes: dict[str, int] = {}
        async with httpx.AsyncClient(transport=AsyncRaTlsTransport(verifier)) as client:
            for stream in (True, False):
                for mode in ("on", "off"):  # one warm-up each
                    server.service.receipts = issuer if mode == "on" else None
                    await _one(client, running.url, stream)
            for stream in (True, False):
                for _ in range(requests // 10):
                    for mode in ("on", "off"):
                        server.service.receipts = issuer if mode == "on" else None
                        started = time.process_time()
                        for _ in range(5):
                            size = await _one(client, running.url, stream)
                        cpu[mode] += time.process_time() - started
                        sizes[f"{mode}_{'stream' if stream else 'whole'}"] = size
        server.service.receipts = issuer
    n = (requests // 10) * 5 * 2  # per mode: streamed and whole
    return {
        "cpu_per_request_on_ms": cpu["on"] / n * 1e3,
        "cpu_per_request_off_ms": cpu["off"] / n * 1e3,
        "ratio": cpu["on"] / cpu["off"],
        "bytes_added_stream": sizes["on_stream"] - sizes["off_stream"],
        "bytes_added_whole": sizes["on_whole"] - sizes["off_whole"],
    }


async def _one(client: httpx.AsyncClient, url: str, stream: bool) -> int:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "bench"}],
        "max_tokens": 32,
        "stream": stream,
    }
    response = await client.post(url + "/v1/chat/completions", json=body)
    assert response.status_code == 200
    header = sum(len(k) + len(v) + 4 for k, v in response.headers.items())
    return len(response.content) + header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    for name, value in isolated().items():
        print(f"isolated {name}: {value:.1f}")
    for name, value in asyncio.run(through_service(args.requests)).items():
        print(f"service {name}: {value:.3f}")
    print(json.dumps({"note": "ratio = CPU per request with receipts / without, same run"}))


if __name__ == "__main__":
    main()
