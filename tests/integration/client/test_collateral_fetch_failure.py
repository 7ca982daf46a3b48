"""Issue 12 point 13: ``enclave verify`` and ``enclave models`` crashed with a segmentation fault
(exit 139, or 135) in about one run in four when collateral could not be fetched. A failed fetch
must end with the clear error alone, every time: each command runs in its own process against a
PCCS port where nothing listens and against a PCCS that answers 503."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.integration.client.conftest import Running

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUNS = 10


class _Down(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"down")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing_pccs() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def closed_pccs() -> Iterator[str]:
    """A port that is bound (so nothing else takes it) but not listening: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def _run(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "enclave",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, out.decode(errors="replace")


async def test_a_failed_collateral_fetch_ends_with_the_error_alone_every_time(
    running: Running, failing_pccs: str, closed_pccs: str
) -> None:
    bundle = running.tmp / "run" / "simulated-tee"
    trust = ("--root-ca", str(bundle / "root_ca.pem"), "--insecure-simulated-root")
    commands = []
    for index in range(RUNS):
        pccs = ("--pccs", closed_pccs if index % 2 == 0 else failing_pccs)
        if index % 4 < 2:
            commands.append(("verify", running.url, *pccs, *trust))
        else:
            pin = ("--insecure-any-measurement",)  # models sends only under a pinned policy
            commands.append(("models", "status", "--url", running.url, *pccs, *trust, *pin))
    results: list[tuple[int, str]] = []
    for start in range(0, RUNS, 5):  # five at a time: bounded load on a small machine
        batch = commands[start : start + 5]
        results += await asyncio.gather(*(_run(*argv) for argv in batch))
    for argv, (code, out) in zip(commands, results, strict=True):
        assert code == 1, f"{argv[0]} exited {code}:\n{out}"
        assert "collateral_unavailable" in out
        assert "Fatal Python error" not in out
        assert "Traceback" not in out
