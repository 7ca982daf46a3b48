"""Hostile clients against the real service (uvicorn, RA-TLS, real sockets on loopback), issue
12: a future-dated request replayed after the window (3); a flood of attestation reports through
the OHTTP gateway leaves a directly connected client its fresh report (4); nested JSON, a
padded nonce and an inner Expect: 100-continue are typed 400/417 answers (6, 7, 11);
load-token guessing is limited per peer, also anonymously through the gateway, and overall,
and a token too short to be a secret is refused at start (10); ``enclave serve`` under a
non-UTC TZ accepts a current asctime Date (12). Each test runs its own service with small
limits so that it stays short."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from attestation.collateral import Collateral
from attestation.ratls import parse_certificate
from attestation.verify import verify_evidence
from enclave.protocol import bhttp
from enclave.protocol.ohttp import decode_key_configs
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.server.conftest import (
    Running,
    accepting_policy,
    encapsulate,
    handshake_certificate,
    key_configs,
    post_ohttp,
)
from tests.integration.server.test_serve_process import free_port, serve_command

TOKEN = "hostile-suite-load-token-3b8e0d4f6a1c9e27"
NONCE_BYTES = 32

Serve = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[Running]:
        (tmp_path / "models" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / "tiny" / "config.json").write_text("{}")
        settings = local_settings(tmp_path, load_token=TOKEN, **overrides)
        simulator = Simulator.create()
        async with serve_locally(settings, simulator=simulator) as server:
            assert server.bound_port is not None
            yield Running(server, simulator, server.bound_port, tmp_path)

    return factory


def inner(method: bytes, target: str, body: bytes = b"", **headers: str) -> bhttp.Request:
    fields = [(b"date", formatdate(time.time(), usegmt=True).encode())]
    fields += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return bhttp.Request(method, b"https", b"enclave", target.encode(), tuple(fields), body)


async def through_gateway(running: Running, request: bhttp.Request) -> bhttp.Response:
    config = (await key_configs(running))[0]
    body, decoder = encapsulate(config, request)
    async with running.client() as client:
        result = await post_ohttp(client, body, decoder)
    assert result.status == 200
    assert result.complete
    return bhttp.decode_response(result.plaintext)


def direct(running: Running, source: str = "127.0.0.1") -> httpx.AsyncClient:
    """A client on its own connection from ``source`` (any 127/8 address is this machine)."""
    transport = httpx.AsyncHTTPTransport(verify=False, local_address=source)
    return httpx.AsyncClient(base_url=running.url, transport=transport, timeout=30.0)


async def test_a_report_flood_through_the_gateway_leaves_direct_clients_a_fresh_report(
    serve: Serve,
) -> None:
    """Point 4: 70 reports through OHTTP in under a second made every other client's report
    429. Now the relayed requests spend their own budget (4 per outer peer here), the refusals
    say when to retry, and a direct client still gets a report over its own nonce."""
    async with serve(
        report_rate_relayed_per_peer_per_minute=4, report_rate_relayed_global_per_minute=8
    ) as running:
        statuses = []
        for _ in range(12):
            nonce = os.urandom(NONCE_BYTES).hex()
            response = await through_gateway(
                running, inner(b"GET", f"/v1/attestation/report?nonce={nonce}")
            )
            statuses.append(response.status)
            if response.status == 429:
                retry_after = dict(response.headers)[b"retry-after"]
                assert 1 <= int(retry_after) <= 60
                assert json.loads(response.content)["error"]["code"] == "rate_limited"
        assert statuses[:4] == [200] * 4
        assert statuses[4:] == [429] * 8

        nonce = os.urandom(NONCE_BYTES)
        async with direct(running) as client:
            report = await client.get("/v1/attestation/report", params={"nonce": nonce.hex()})
        assert report.status_code == 200, report.text
        spki = parse_certificate(await handshake_certificate(running.port)).spki_der
        verified = verify_evidence(
            bytes.fromhex(report.json()["evidence"]),
            collateral=Collateral.from_json(running.simulator.collateral_json()),
            peer_spki_der=spki,
            nonce=nonce,
            policy=accepting_policy(running),
            insecure_root_ca_der=running.simulator.root_ca_der,
        )
        assert verified.claims is not None
        assert verified.claims.nonce == nonce


async def test_a_many_address_report_flood_leaves_a_rare_client_its_report(serve: Serve) -> None:
    """Issue 20 point 4 over real sockets (default limits): 16 addresses ask for reports at
    2 Hz each, which spends the direct shared budget; clients that ask once, during the flood,
    still get their report (from the rare clients' reserve; 429 before)."""

    async def report(client: httpx.AsyncClient) -> int:
        nonce = os.urandom(NONCE_BYTES).hex()
        return (await client.get("/v1/attestation/report", params={"nonce": nonce})).status_code

    async with serve() as running:
        flooders = [direct(running, f"127.0.0.{n}") for n in range(10, 26)]
        clients = [await flooder.__aenter__() for flooder in flooders]
        statuses: list[int] = []
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():
                statuses.extend(await asyncio.gather(*(report(client) for client in clients)))
                await asyncio.sleep(0.5)

        task = asyncio.create_task(flood())
        try:
            await asyncio.sleep(3.0)
            rare = []
            for n in range(3):
                async with direct(running, f"127.0.0.{99 + n}") as client:
                    rare.append(await report(client))
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await task
            for flooder in flooders:
                await flooder.__aexit__(None, None, None)
        assert statuses.count(429) > len(statuses) / 3  # the flooders met the shared budget
        assert rare == [200, 200, 200]


async def _unload(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(
        "/v1/models/unload", json={"model": "tiny"}, headers={"Authorization": f"Bearer {token}"}
    )


async def test_load_token_guessing_is_limited_per_peer_and_overall(serve: Serve) -> None:
    """Point 10, direct clients: three failures per peer, five overall, then 429 with
    Retry-After. A peer out of its own budget is refused whatever it presents (the right token
    too); the shared budget refuses only wrong tokens (issue 20 point 3)."""
    async with serve(
        load_token_failures_per_peer_per_minute=3, load_token_failures_global_per_minute=5
    ) as running:
        async with direct(running, "127.0.0.1") as first:
            codes = [(await _unload(first, f"guess-{n}")).status_code for n in range(3)]
            assert codes == [401] * 3
            refused = await _unload(first, "guess-3")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_token_failures"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            assert (await _unload(first, TOKEN)).status_code == 429
        async with direct(running, "127.0.0.2") as second:
            assert (await _unload(second, TOKEN)).status_code != 401  # successes do not count
            assert [(await _unload(second, f"g{n}")).status_code for n in range(3)] == [
                401,
                401,
                429,  # the fifth failure overall was the last one allowed
            ]
        async with direct(running, "127.0.0.3") as third:
            assert (await _unload(third, "never-tried-here")).status_code == 429
            assert (await _unload(third, TOKEN)).status_code not in (401, 429)  # the operator


async def test_guessers_on_other_addresses_never_hold_the_operator_back(serve: Serve) -> None:
    """Issue 20 point 3 over real sockets (default limits): four addresses guess as fast as
    they can, interleaved with the operator's unloads from a fifth; every unload goes through
    (it got 429 on 25 of 26 when every attempt was charged before the comparison)."""
    async with serve() as running:
        guessers = [direct(running, f"127.0.0.{n}") for n in range(2, 6)]
        clients = [await guesser.__aenter__() for guesser in guessers]
        try:
            async with direct(running, "127.0.0.6") as operator:
                codes, refused = [], 0
                for round_ in range(13):
                    for n, client in enumerate(clients):
                        for k in range(4):
                            status = (await _unload(client, f"g-{round_}-{n}-{k}")).status_code
                            assert status in (401, 429)
                            refused += status == 429
                    codes.append((await _unload(operator, TOKEN)).status_code)
                    codes.append((await _unload(operator, TOKEN)).status_code)
        finally:
            for guesser in guessers:
                await guesser.__aexit__(None, None, None)
        assert refused > 0  # the guessers did meet the limits
        assert len(codes) == 26
        assert not {401, 429} & set(codes), codes


async def test_load_token_guessing_through_the_gateway_is_limited(serve: Serve) -> None:
    """Point 10, anonymously: requests through OHTTP have no client address; they are limited
    per outer peer (here, this test's one connection source) and count towards the total."""
    async with serve(
        load_token_failures_per_peer_per_minute=3, load_token_failures_global_per_minute=100
    ) as running:
        statuses = []
        for n in range(5):
            request = inner(
                b"POST",
                "/v1/models/unload",
                json.dumps({"model": "tiny"}).encode(),
                content_type="application/json",
                authorization=f"Bearer guess-{n}",
            )
            statuses.append((await through_gateway(running, request)).status)
        assert statuses == [401, 401, 401, 429, 429]
        async with direct(running) as client:  # a direct peer has its own bucket
            assert (await _unload(client, "direct-guess")).status_code == 401


def test_a_load_token_too_short_to_be_a_secret_is_refused_at_start(tmp_path: Path) -> None:
    weak = "hunter2-weak-token"
    result = subprocess.run(
        serve_command(
            tmp_path, free_port(), "--tee", "simulated", "--insecure-allow-simulated-tee"
        ),
        env={**os.environ, "LOAD_TOKEN": weak},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "load token is too short to be a secret" in result.stderr
    assert weak not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


async def test_a_future_dated_request_replayed_after_the_window_is_refused(serve: Serve) -> None:
    """Point 3 over real sockets: dated 0.9 W ahead, replayed W + 1.5 s later."""
    window = 2.0
    async with serve(replay_window_seconds=window) as running:
        config = (await key_configs(running))[0]
        ahead = formatdate(time.time() + 0.9 * window, usegmt=True).encode()
        request = bhttp.Request(
            b"GET", b"https", b"enclave", b"/v1/models", ((b"date", ahead),), b""
        )
        body, decoder = encapsulate(config, request)
        async with running.client() as client:
            first = await post_ohttp(client, body, decoder)
            assert first.status == 200
            assert bhttp.decode_response(first.plaintext).status == 200
            await asyncio.sleep(window + 1.5)  # past the old cache's memory, not the Date's
            replay = await client.post(
                "/.well-known/ohttp-gateway",
                content=body,
                headers={"content-type": "message/ohttp-chunked-req"},
            )
        assert replay.status_code == 400


async def test_malformed_input_over_real_sockets_is_a_typed_400(serve: Serve) -> None:
    """Points 6, 7 and 11 over real sockets: nested JSON on the inference and lifecycle routes,
    a whitespace-padded nonce, and an inner Expect: 100-continue through the gateway."""
    deep = b"[" * 2000 + b"]" * 2000
    async with serve() as running:
        async with direct(running) as client:
            for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
                response = await client.post(
                    path, content=deep, headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, (path, response.text)
                assert response.json()["error"]["code"] == "invalid_json"
            response = await client.post(
                "/v1/models/load",
                content=deep,
                headers={"content-type": "application/json", "authorization": f"Bearer {TOKEN}"},
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_json"
            response = await client.get("/v1/attestation/report", params={"nonce": "ab" + " " * 62})
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_nonce"
        expecting = inner(b"GET", "/v1/models", expect="100-continue")
        refused = await through_gateway(running, expecting)
        assert refused.status == 417
        assert json.loads(refused.content)["error"]["code"] == "expectation_failed"


async def test_enclave_serve_under_a_non_utc_tz_accepts_a_current_asctime_date(
    tmp_path: Path,
) -> None:
    """Point 12 through ``enclave serve``: with TZ=America/New_York the asctime form of a
    current Date was read as local time and refused as five hours away."""
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    port = free_port()
    command = serve_command(tmp_path, port, "--tee", "simulated", "--insecure-allow-simulated-tee")
    env = {**os.environ, "TZ": "America/New_York", "LOAD_TOKEN": TOKEN}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, verify=False, timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, "enclave serve exited"
                assert time.monotonic() < deadline, "enclave serve did not listen"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            config = decode_key_configs((await client.get("/.well-known/ohttp-keys")).content)[0]
            now = time.gmtime()
            asctime = time.strftime(f"%a %b {now.tm_mday:2d} %H:%M:%S %Y", now).encode()
            request = bhttp.Request(
                b"GET", b"https", b"enclave", b"/v1/models", ((b"date", asctime),), b""
            )
            body, decoder = encapsulate(config, request)
            result = await post_ohttp(client, body, decoder)
        assert result.status == 200
        assert bhttp.decode_response(result.plaintext).status == 200
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


NOT_JSON = (
    b'{"model":"tiny","messages":[],"temperature":NaN}',
    b'{"model":"tiny","messages":[],"temperature":Infinity}',
    b'{"model":"tiny","messages":[],"temperature":-Infinity}',
    b'{"model":"tiny","messages":[],"temperature":1e999}',
    b'{"model":"tiny","messages":[{"role":"user","content":"\\ud800"}]}',
    b'{"model":"tiny","\\udfff":1}',
)


async def test_what_python_reads_beyond_json_is_a_typed_400_not_an_engine_error(
    serve: Serve,
) -> None:
    """Issue 20 point 9 on the service itself: NaN, Infinity, 1e999 and lone surrogates went
    on to the engine (502 engine_error); now each is the caller's 400 invalid_json, on every
    inference route, with the model loaded so nothing else refuses first."""
    async with (
        serve(engine_flags=("--dev-load-seconds", "0.1")) as running,
        direct(running) as client,
    ):
        load = await client.post(
            "/v1/models/load",
            json={"model": "tiny"},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert load.status_code in (200, 202), load.text
        deadline = time.monotonic() + 60
        while (await client.get("/v1/models/status")).json()["proxy_status"] != "ready":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            for body in NOT_JSON:
                response = await client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, (path, body, response.text)
                assert response.json()["error"]["code"] == "invalid_json"
