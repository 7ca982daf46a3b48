"""``/proxy/`` in a real headless Chromium (Debian's ``chromium``): the page renders (a
screenshot with content, the DOM as the browser built it), shows NOT PINNED when the policy
pins nothing and PINNED with the steps, model and receipts when it does, shows FAILED with the
reason once the service changes under the proxy (another TD on the same address), and stays
behind the proxy's door (Host rule, access token)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import httpx
import pytest

from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import ProxyOptions, build_proxy_app
from enclave_dev.local import local_settings, serve_locally
from enclave_dev.tee import Simulator
from tests.integration.client.conftest import TOKEN, Running, serve, server_settings

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,2200",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dom(url: str) -> str:
    result = chromium("--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct byte values of the decoded pixels."""
    result = chromium(f"--screenshot={path}", url)
    assert result.returncode == 0, result.stderr[-2000:]
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, at = b"", 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        if data[at + 4 : at + 8] == b"IDAT":
            idat += data[at + 8 : at + 8 + length]
        at += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _settings_on(tmp: Path, port: int):  # type: ignore[no-untyped-def]
    (tmp / "models" / "tiny").mkdir(parents=True)
    (tmp / "models" / "tiny" / "config.json").write_text('{"architectures": ["Fake"]}')
    return local_settings(
        tmp,
        load_token=TOKEN,
        engine_flags=("--dev-load-seconds", "0.1"),
        shutdown_grace_seconds=5,
        port=port,
    )


async def test_the_page_in_chromium(tmp_path: Path) -> None:
    simulator = Simulator.create()
    first = serve_locally(server_settings(tmp_path / "a"), simulator=simulator)
    server = await first.__aenter__()
    running = Running(server, simulator, server.bound_port or 0, tmp_path)
    open_services = [first]
    try:
        await running.load_model()
        options = ProxyOptions(recheck_seconds=0.0, recheck_timeout_seconds=20.0)
        unpinned = running.policy(
            mrtd=None,
            rtmr0=None,
            rtmr1=None,
            rtmr2=None,
            rtmr3=None,
            mrconfigid=None,
            insecure_any_measurement=True,
        )
        loose = build_proxy_app(
            AsyncOhttpTransport(running.url, running.verifier(unpinned)), options=options
        )
        async with serve(loose) as url:
            text = _text(await asyncio.to_thread(dom, url + "/proxy/"))
        assert "NOT PINNED" in text
        assert "insecure_any_measurement" in text

        pinned = build_proxy_app(
            AsyncOhttpTransport(running.url, running.verifier()),
            options=dataclasses.replace(options, receipts_dir=tmp_path / "kept"),
        )
        async with serve(pinned) as url, httpx.AsyncClient(timeout=60) as client:
            answer = await client.post(
                url + "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
            )
            assert answer.status_code == 200
            receipt_id = answer.json()["enclave_receipt"]["receipt"]["id"]
            width, height, colours = await asyncio.to_thread(
                screenshot, url + "/proxy/", tmp_path / "page.png"
            )
            assert (width, height) == (1280, 2200)
            assert colours > 20  # text and colours, not a blank page
            text = _text(await asyncio.to_thread(dom, url + "/proxy/"))
            assert "VERIFIED" in text
            assert "NOT PINNED" not in text
            assert "PINNED: MRTD and RTMR0-2" in text
            assert "4.10" in text and "receipt key" in text  # noqa: PT018 (one step each)
            assert "tiny" in text
            assert receipt_id in text
            assert "verified" in text
            wrong_host = await client.get(url + "/proxy/", headers={"host": "evil.example"})
            assert wrong_host.status_code == 403

            # The service changes under the proxy: another TD (another root) on its address.
            await first.__aexit__(None, None, None)
            open_services.remove(first)
            other = Simulator.create()
            second = serve_locally(_settings_on(tmp_path / "b", running.port), simulator=other)
            await second.__aenter__()
            open_services.append(second)
            page = await asyncio.to_thread(dom, url + "/proxy/")
            text = _text(page)
            assert "FAILED" in text
            assert "VERIFIED" not in text.replace("NOT VERIFIED", "")
            assert "FAIL (" in text  # the failed step, with its reason code
            await asyncio.to_thread(screenshot, url + "/proxy/", tmp_path / "failed.png")
    finally:
        for service in open_services:
            await service.__aexit__(None, None, None)


async def test_with_a_token_the_page_needs_it(tmp_path: Path) -> None:
    simulator = Simulator.create()
    async with serve_locally(server_settings(tmp_path), simulator=simulator) as server:
        running = Running(server, simulator, server.bound_port or 0, tmp_path)
        token = "page-token-0123456789abcdef"
        app = build_proxy_app(
            AsyncOhttpTransport(running.url, running.verifier()),
            options=ProxyOptions(token=token),
        )
        async with serve(app) as url, httpx.AsyncClient(timeout=60) as client:
            refused = await client.get(url + "/proxy/")
            assert refused.status_code == 401
            page = await client.get(url + "/proxy/", headers={"authorization": f"Bearer {token}"})
            assert page.status_code == 200
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert "<script" not in page.text
            # nothing a browser would fetch: no link, image, frame, font or stylesheet
            assert re.search(r"\b(src|href|action)\s*=|url\(|@import|<link", page.text) is None
