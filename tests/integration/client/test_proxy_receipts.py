"""``enclave proxy --receipts DIR`` as a user runs it: the real CLI daemon against the real
service; answers on every route (OpenAI whole and streamed, embeddings, Anthropic whole and
streamed) leave a receipt and its evidence in DIR; the service and the proxy stop; each
receipt then verifies offline from DIR alone with ``enclave receipt verify``, with the exact
request and response for the OpenAI routes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from attestation.policy import policy_to_toml
from attestation.receipt import CERTIFICATE_HEADER, EVIDENCE_REQUEST_HEADER, HEADER
from enclave.client import AsyncOhttpTransport, AsyncRaTlsTransport
from enclave.client._proxy import ProxyOptions, build_proxy_app
from enclave.client._receipts import ReceiptKeeper, ResponseWatcher
from enclave_dev.local import serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import Running, serve, server_settings
from tests.integration.client.test_policy_workflow import run_cli, trust
from tests.integration.client.test_proxy_daemon import proxy
from tests.integration.client.test_relay_cli_daemon import exited, socket_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "keep this"}], "max_tokens": 5}
MESSAGES = {"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def _load(running: Running) -> None:
    await running.load_model()


def _exchanges(base: str) -> list[tuple[str, bytes, bytes]]:
    """Requests on every route through the proxy: (path, request body, response body)."""
    kept = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for path, document in (
            ("/v1/chat/completions", CHAT),
            ("/v1/chat/completions", {**CHAT, "stream": True}),
            ("/v1/completions", {"model": "tiny", "prompt": "p", "max_tokens": 4, "stream": True}),
            ("/v1/embeddings", {"model": "tiny", "input": "e"}),
            ("/v1/messages", MESSAGES),
            ("/v1/messages", {**MESSAGES, "stream": True}),
        ):
            body = json.dumps(document).encode()
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200, response.text
            kept.append((path, body, response.content))
    return kept


async def test_receipts_kept_by_the_proxy_verify_after_the_service_is_gone(
    tmp_path: Path,
) -> None:
    simulator = Simulator.create()
    service = serve_locally(server_settings(tmp_path), simulator=simulator)
    server = await service.__aenter__()
    stopped = False
    try:
        running = Running(server, simulator, server.bound_port or 0, tmp_path)
        await _load(running)
        policy = tmp_path / "policy.toml"
        policy.write_text(policy_to_toml(running.policy()))
        receipts = tmp_path / "kept"
        with socket_port() as port:
            pass
        files = ("--pid-file", str(tmp_path / "proxy.pid"))
        start = [
            "start",
            running.url,
            *trust(running, ("insecure_dev_engine", "insecure_allow_simulated_tee")),
            "--policy",
            str(policy),
            "--compat",
            "both",
            "--listen",
            f"127.0.0.1:{port}",
            "--receipts",
            str(receipts),
            *files,
            "--log-file",
            str(tmp_path / "proxy.log"),
        ]
        started = await asyncio.to_thread(proxy, *start)
        assert started.returncode == 0, started.stderr
        pid = int((tmp_path / "proxy.pid").read_text().split()[0])
        try:
            exchanges = await asyncio.to_thread(_exchanges, f"http://127.0.0.1:{port}")
        finally:
            stop = await asyncio.to_thread(proxy, "stop", *files)
        assert stop.returncode == 0, stop.stdout
        assert exited(pid)
        root = server.simulated.bundle_dir / "root_ca.pem"  # type: ignore[union-attr]
        root_copy = tmp_path / "root_ca.pem"
        root_copy.write_bytes(root.read_bytes())
    finally:
        await service.__aexit__(None, None, None)
        stopped = True
    assert stopped
    log = (tmp_path / "proxy.log").read_text()
    assert "refused" not in log, log  # the proxy checked every receipt itself
    kept = sorted((receipts / "receipts").glob("rcpt_*.json"))
    assert len(kept) == len(exchanges)
    assert len(list((receipts / "evidence").glob("*.json"))) == 1  # one certificate
    by_request = {}
    for path in kept:
        document = json.loads(path.read_bytes())["receipt"]
        by_request[document["request_sha256"]] = path
    trusted = ("--root-ca", str(root_copy), "--insecure-simulated-root")
    for route, request, response in exchanges:
        receipt = by_request.get(hashlib.sha256(request).hexdigest())
        if route == "/v1/messages":  # translated: the receipt covers the chat request sent
            continue
        assert receipt is not None, route
        (tmp_path / "request").write_bytes(request)
        (tmp_path / "response").write_bytes(response)
        code, out, _ = run_cli(
            "receipt",
            "verify",
            str(receipt),
            "--policy",
            str(policy),
            *trusted,
            "--request",
            str(tmp_path / "request"),
            "--response",
            str(tmp_path / "response"),
        )
        assert code == 0, out
        assert "8. response: ok" in out
        (tmp_path / "response").write_bytes(response.replace(b"tiny", b"tinY", 1))
        code, out, _ = run_cli(
            "receipt",
            "verify",
            str(receipt),
            "--policy",
            str(policy),
            *trusted,
            "--response",
            str(tmp_path / "response"),
        )
        assert code == 1
        assert "reason: response_mismatch" in out
    for receipt in kept:  # every one, the Anthropic ones too, from the folder alone
        code, out, _ = run_cli("receipt", "verify", str(receipt), "--policy", str(policy), *trusted)
        assert code == 0, out


async def test_the_proxy_checks_each_receipt_and_keeps_the_latest(tmp_path: Path) -> None:
    simulator = Simulator.create()
    async with serve_locally(server_settings(tmp_path), simulator=simulator) as server:
        running = Running(server, simulator, server.bound_port or 0, tmp_path)
        await _load(running)
        transport = AsyncOhttpTransport(running.url, running.verifier())
        app = build_proxy_app(transport, compat="both", options=ProxyOptions())
        async with serve(app) as url:
            await asyncio.to_thread(_exchanges, url)
        latest = list(app.state.receipts.latest)
    assert len(latest) == 6
    assert all(kept.verified for kept in latest), latest
    assert all(kept.path is None for kept in latest)  # no folder: memory only


async def test_an_answer_from_another_certificate_is_kept_with_the_one_it_carried(
    tmp_path: Path,
) -> None:
    """Behind a balancer another replica (another certificate) may answer: asked for, the
    answer carries its certificate, which the proxy verifies and keeps instead."""
    simulator = Simulator.create()
    async with serve_locally(server_settings(tmp_path), simulator=simulator) as server:
        running = Running(server, simulator, server.bound_port or 0, tmp_path)
        await _load(running)
        transport = AsyncOhttpTransport(running.url, running.verifier())
        endpoint = await transport.refresh()
        await server.certificates.reissue("lifetime")  # what another replica would present
        body = json.dumps({**CHAT, "stream": True}).encode()
        async with httpx.AsyncClient(
            transport=AsyncRaTlsTransport(running.verifier()), timeout=60
        ) as client:
            answers = [
                await client.post(
                    running.url + "/v1/chat/completions",
                    content=content,
                    headers={"content-type": "application/json", **extra},
                )
                for content, extra in (
                    (body, {EVIDENCE_REQUEST_HEADER: "certificate"}),
                    (json.dumps(CHAT).encode(), {EVIDENCE_REQUEST_HEADER: "certificate"}),
                    (body, {}),
                )
            ]
        kept_dir = tmp_path / "kept"
        keeper = ReceiptKeeper(kept_dir)
        outcomes = []
        for answer, sent in zip(answers, (body, json.dumps(CHAT).encode(), body), strict=True):
            sse = answer.headers["content-type"].startswith("text/event-stream")
            watcher = ResponseWatcher(
                answer.headers.get(HEADER), sse, answer.headers.get(CERTIFICATE_HEADER)
            )
            watcher.feed(answer.content)
            outcomes.append(
                await keeper.keep(
                    endpoint, "/v1/chat/completions", sent, watcher, running.verifier()
                )
            )
        # the carried certificate is verified like a connection's: another policy refuses it
        wrong = running.verifier(running.policy(mrtd=frozenset({b"\x22" * 48})))
        watcher = ResponseWatcher(
            answers[1].headers.get(HEADER), False, answers[1].headers.get(CERTIFICATE_HEADER)
        )
        watcher.feed(answers[1].content)
        refused = await ReceiptKeeper(None).keep(
            endpoint, "/v1/chat/completions", json.dumps(CHAT).encode(), watcher, wrong
        )
        policy = tmp_path / "policy.toml"
        policy.write_text(policy_to_toml(running.policy()))
        root = tmp_path / "root.pem"
        root.write_bytes(simulator.root_ca_pem)
    assert [o.verified for o in outcomes] == [True, True, False]
    assert outcomes[2].reason == "receipt_quote_mismatch"  # no certificate carried
    assert refused.reason == "mrtd_not_allowed"
    assert CERTIFICATE_HEADER not in answers[2].headers
    assert len(list((kept_dir / "evidence").glob("*.json"))) == 1  # the new certificate's
    for outcome in outcomes[:2]:
        assert outcome.path is not None
        code, out, _ = run_cli(
            "receipt",
            "verify",
            outcome.path,
            "--policy",
            str(policy),
            "--root-ca",
            str(root),
            "--insecure-simulated-root",
        )
        assert code == 0, out
