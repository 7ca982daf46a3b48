"""The relay (sees no plaintext, forwards nothing identifying), `enclave verify`, and the
proxy daemon (`start` twice refuses the second, `stop` really stops)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from attestation.policy import policy_to_toml
from enclave.cli import main
from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import build_proxy_app
from enclave.client._relay import RELAY_PATH, build_relay_app
from tests.integration.client.conftest import CANARY, Running, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

RELAY_KEY = "relay-key-0d2c"
CALLER_KEY = "sk-caller-key-77e1"


def bundle(running: Running) -> Path:
    return running.tmp / "run" / "simulated-tee"


async def test_relay_never_sees_the_prompt_or_the_callers_key(running: Running) -> None:
    seen: list[bytes] = []
    relay_app = build_relay_app(
        running.url + "/.well-known/ohttp-gateway",
        api_key=RELAY_KEY,
        insecure_skip_tls_verify=True,
        observe=seen.append,
    )
    async with serve(relay_app) as relay:
        transport = AsyncOhttpTransport(
            running.url,
            running.verifier(),
            relay_url=relay + RELAY_PATH,
            relay_headers={"Authorization": f"Bearer {RELAY_KEY}"},
        )
        client = openai.AsyncOpenAI(
            base_url=running.url + "/v1",
            api_key=CALLER_KEY,
            http_client=httpx.AsyncClient(transport=transport),
        )
        answer = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": CANARY}], max_tokens=32
        )
        await client.close()
        async with httpx.AsyncClient() as plain:  # without the relay's key: refused
            refused = await plain.post(
                relay + RELAY_PATH, content=b"x", headers={"content-type": "message/ohttp-req"}
            )
    assert CANARY in (answer.choices[0].message.content or "")  # the engine echoes it
    assert seen, "the request went through the relay"
    for body in seen:
        assert CANARY.encode() not in body
        assert CALLER_KEY.encode() not in body
    assert refused.status_code == 401


async def test_wrong_policy_sends_nothing_through_the_relay(running: Running) -> None:
    seen: list[bytes] = []
    relay_app = build_relay_app(
        running.url + "/.well-known/ohttp-gateway",
        insecure_skip_tls_verify=True,
        observe=seen.append,
    )
    async with serve(relay_app) as relay:
        transport = AsyncOhttpTransport(
            running.url,
            running.verifier(running.policy(mrtd=frozenset({b"\x11" * 48}))),
            relay_url=relay + RELAY_PATH,
        )
        async with serve(build_proxy_app(transport)) as proxy, httpx.AsyncClient() as client:
            response = await client.post(
                proxy + "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": CANARY}]},
            )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "attestation_unverified"
    assert seen == []


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


async def test_enclave_verify_prints_facts_or_the_reason(running: Running, tmp_path: Path) -> None:
    trust = (
        "--collateral",
        str(bundle(running) / "collateral.json"),
        "--root-ca",
        str(bundle(running) / "root_ca.pem"),
        "--insecure-simulated-root",
        "--insecure-accept-service",  # the service runs the development engine and says so
        "insecure_dev_engine",
    )
    code, out = await asyncio.to_thread(run_cli, "verify", running.url, *trust, "--json")
    assert code == 0, out
    document = json.loads(out)
    assert document["verified"] is True
    assert document["measurements_pinned"] is False  # no --policy: verified, not pinned
    assert document["insecure"] == ["insecure_root_ca_der", "insecure_accept_service"]
    facts = document["facts"]
    assert facts["tcb_status"] == "UpToDate"
    assert facts["model"]["name"] == "tiny"

    policy = tmp_path / "policy.toml"
    policy.write_text(f'mrtd = ["{"22" * 48}"]\n')
    code, out = await asyncio.to_thread(
        run_cli, "verify", running.url, *trust, "--policy", str(policy)
    )
    assert code == 1
    assert "reason: mrtd_not_allowed" in out

    code, out = await asyncio.to_thread(  # Intel's root: the simulated quote must not verify
        run_cli, "verify", running.url, "--collateral", trust[1], "--json"
    )
    assert code == 1
    assert json.loads(out)["reason"] == "cert_chain_invalid"

    code, out = await asyncio.to_thread(  # a foreign root without the insecure flag
        run_cli, "verify", running.url, *trust[:4]
    )
    assert code == 1
    assert "input_error" in out


def enclave(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclave", "proxy", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_daemon_start_twice_refuses_and_stop_stops(running: Running, tmp_path: Path) -> None:
    with socket_port() as port:
        listen = f"127.0.0.1:{port}"
    files = ("--pid-file", str(tmp_path / "proxy.pid"))
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    start = (
        "start",
        running.url,
        "--listen",
        listen,
        "--collateral",
        str(bundle(running) / "collateral.json"),
        "--root-ca",
        str(bundle(running) / "root_ca.pem"),
        "--insecure-simulated-root",
        *files,
        "--log-file",
        str(tmp_path / "proxy.log"),
    )
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_to_toml(running.policy()))

    def scenario() -> None:
        unpinned = enclave(*start, env=env)  # no policy: refused before anything starts
        assert unpinned.returncode == 2
        assert "--save-policy" in unpinned.stderr
        assert not (tmp_path / "proxy.pid").exists()
        first = enclave(*start, "--policy", str(policy), env=env)
        assert first.returncode == 0, first.stderr
        pid = int((tmp_path / "proxy.pid").read_text().split()[0])
        try:
            second = enclave(*start, "--policy", str(policy), env=env)
            assert second.returncode == 1
            assert "already running" in second.stderr
            status = enclave("status", *files, env=env)
            assert status.returncode == 0
            assert json.loads(status.stdout)["http"] is True
        finally:
            stop = enclave("stop", *files, env=env)
        assert stop.returncode == 0, stop.stdout
        assert exited(pid)
        assert not (tmp_path / "proxy.pid").exists()
        status = enclave("status", *files, "--listen", listen, env=env)
        assert status.returncode == 1
        assert json.loads(status.stdout)["running"] is False

    await asyncio.to_thread(scenario)


def exited(pid: int, timeout: float = 10.0) -> bool:
    """The process is gone, or a zombie (exited; its reaper, possibly a subreaper that is
    this very pytest, has not collected it yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
