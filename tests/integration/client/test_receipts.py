"""Receipts from the real service (simulated TEE, development engine): every inference route,
streamed and not, over RA-TLS and through OHTTP, each verified offline against the certificate
it names, with the exact request sent and the exact response received; the openai SDK reads
streamed and whole answers carrying a receipt as before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from attestation.policy import policy_to_toml
from attestation.receipt import (
    HEADER,
    MEMBER,
    SSE_MARKER,
    EvidenceBundle,
    ReceiptError,
    decode_receipt,
    verify_receipt,
)
from enclave.client import (
    AsyncOhttpTransport,
    AsyncRaTlsTransport,
    ReceiptKeeper,
    ResponseWatcher,
    attested_endpoint,
)
from enclave.client._ratls import verified_certificate
from enclave.protocol.padding import strip_event_padding
from tests.integration.client.conftest import Running
from tests.integration.client.test_policy_workflow import run_cli

pytestmark = pytest.mark.asyncio(loop_scope="module")

MESSAGES = [{"role": "user", "content": "a receipt please"}]
REQUESTS = {
    "/v1/chat/completions": {"model": "tiny", "messages": MESSAGES, "max_tokens": 6},
    "/v1/completions": {"model": "tiny", "prompt": "once upon", "max_tokens": 6},
    "/v1/embeddings": {"model": "tiny", "input": "embed me"},
}


def _bundle(running: Running, certificate_der: bytes) -> EvidenceBundle:
    return EvidenceBundle(certificate_der, running.simulator.collateral_json())


def _verify(running: Running, receipt: object, certificate_der: bytes, **kw: bytes) -> None:
    verify_receipt(
        receipt if isinstance(receipt, bytes) else decode_receipt(receipt),  # type: ignore[arg-type]
        _bundle(running, certificate_der),
        policy=running.policy(),
        insecure_root_ca_der=running.simulator.root_ca_der,
        **kw,
    )


def _streamed_receipt(content: bytes) -> dict[str, object]:
    events = [e for e in strip_event_padding(content).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert events[-2].startswith(SSE_MARKER)  # the last event before [DONE]
    receipt = json.loads(events[-2][len(b"data: ") :])[MEMBER]
    assert isinstance(receipt, dict)
    return receipt


@pytest.mark.parametrize("path", sorted(REQUESTS))
async def test_whole_answers_over_ratls_carry_a_receipt_that_verifies(
    running: Running, path: str
) -> None:
    body = json.dumps(REQUESTS[path]).encode()
    async with httpx.AsyncClient(transport=AsyncRaTlsTransport(running.verifier())) as client:
        response = await client.post(
            running.url + path, content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text
    connection = verified_certificate(response)
    assert connection is not None
    assert connection.receipt_key_sha256 is not None
    from_header = decode_receipt(response.headers[HEADER])
    from_body = decode_receipt(response.json()[MEMBER])
    assert from_header.encoded == from_body.encoded
    assert from_header.document["route"] == path
    _verify(
        running,
        from_header.encoded,
        connection.certificate_der,
        request=body,
        response=response.content,
    )
    with pytest.raises(ReceiptError) as refused:
        _verify(
            running,
            from_header.encoded,
            connection.certificate_der,
            request=body,
            response=response.content.replace(b'"tiny"', b'"tinY"'),
        )
    assert refused.value.reason == "response_mismatch"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_streamed_answers_over_ratls_end_with_a_receipt_event(
    running: Running, path: str
) -> None:
    body = json.dumps({**REQUESTS[path], "stream": True}).encode()
    async with httpx.AsyncClient(transport=AsyncRaTlsTransport(running.verifier())) as client:
        response = await client.post(
            running.url + path, content=body, headers={"content-type": "application/json"}
        )
    connection = verified_certificate(response)
    assert connection is not None
    receipt = _streamed_receipt(response.content)
    assert decode_receipt(receipt).response_hash == "sse-lines"
    _verify(running, receipt, connection.certificate_der, request=body, response=response.content)
    with pytest.raises(ReceiptError) as refused:
        _verify(running, receipt, connection.certificate_der, request=body[:-1])
    assert refused.value.reason == "request_mismatch"


async def test_through_ohttp_streamed_and_not(running: Running) -> None:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    async with httpx.AsyncClient(transport=transport) as client:
        for stream in (False, True):
            body = json.dumps({**REQUESTS["/v1/chat/completions"], "stream": stream}).encode()
            response = await client.post(
                running.url + "/v1/chat/completions",
                content=body,
                headers={"content-type": "application/json"},
            )
            content = await response.aread()
            endpoint = attested_endpoint(response)
            assert endpoint is not None
            assert endpoint.receipt_key_sha256 is not None
            receipt = _streamed_receipt(content) if stream else response.json()[MEMBER]
            if not stream:
                assert decode_receipt(response.headers[HEADER]).envelope == receipt
            # the endpoint keeps the certificate its receipts name, and the collateral
            assert endpoint.collateral_json is not None
            _verify(running, receipt, endpoint.certificate_der, request=body, response=content)


async def test_the_openai_sdk_ignores_the_receipt_and_keeps_it_readable(running: Running) -> None:
    client = openai.AsyncOpenAI(
        base_url=running.url + "/v1",
        api_key="sk-caller",
        http_client=httpx.AsyncClient(
            transport=AsyncOhttpTransport(running.url, running.verifier())
        ),
    )
    whole = await client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6)
    assert whole.choices[0].message.content
    assert (whole.model_extra or {}).get(MEMBER) is not None
    chunks = [
        chunk
        async for chunk in await client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=6, stream=True
        )
    ]
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].id == chunks[0].id
    assert (chunks[-1].model_extra or {}).get(MEMBER) is not None
    await client.close()


async def test_a_program_keeps_receipts_with_the_library(running: Running, tmp_path: Path) -> None:
    """``ReceiptKeeper`` and ``ResponseWatcher`` over both transports: streamed through OHTTP
    (``attested_endpoint``) and whole over RA-TLS (``verified_certificate``), each kept and
    verified offline from the folder."""
    keeper = ReceiptKeeper(tmp_path / "kept")
    body = json.dumps({**REQUESTS["/v1/chat/completions"], "stream": True}).encode()
    headers = {"content-type": "application/json"}
    url = running.url + "/v1/chat/completions"
    ohttp = AsyncOhttpTransport(running.url, running.verifier())
    async with httpx.AsyncClient(transport=ohttp) as client:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            watcher = ResponseWatcher.of(response)
            async for piece in response.aiter_bytes():
                watcher.feed(piece)
        streamed = await keeper.keep(
            attested_endpoint(response), "/v1/chat/completions", body, watcher, running.verifier()
        )
    whole_body = json.dumps(REQUESTS["/v1/embeddings"]).encode()
    ratls = AsyncRaTlsTransport(running.verifier())
    async with httpx.AsyncClient(transport=ratls) as client:
        response = await client.post(
            running.url + "/v1/embeddings", content=whole_body, headers=headers
        )
        watcher = ResponseWatcher.of(response)
        watcher.feed(response.content)
        whole = await keeper.keep(
            verified_certificate(response), "/v1/embeddings", whole_body, watcher
        )
    assert (streamed.verified, whole.verified) == (True, True), (streamed, whole)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_to_toml(running.policy()))
    root = tmp_path / "root.pem"
    root.write_bytes(running.simulator.root_ca_pem)
    for kept in (streamed, whole):
        assert kept.path is not None
        code, out, _ = run_cli(
            "receipt", "verify", kept.path, "--policy", str(policy),
            "--root-ca", str(root), "--insecure-simulated-root",
        )  # fmt: skip
        assert code == 0, out


async def test_enclave_verify_prints_the_receipt_key(running: Running) -> None:
    from tests.integration.client.test_policy_workflow import trust

    code, out, _ = await asyncio.to_thread(
        run_cli,
        "verify",
        running.url,
        *trust(running, ("insecure_dev_engine", "insecure_allow_simulated_tee")),
    )
    assert code == 0, out
    claim = running.server.receipts.claim.hex()
    assert f"receipt_key_sha256: {claim}" in out
    assert "8     receipt key: ok" in out
