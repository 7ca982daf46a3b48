"""Collateral sources: offline file and folder, and a PCCS (a local fake) with its cache."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.collateral import Collateral, OfflineCollateral, PccsCollateral
from attestation.errors import CollateralError
from attestation.verify import verify_quote
from tests.vectors import load_bytes, load_json, vector_path

QUOTE = load_bytes("tdx/tdx_quote")
NOW = 1752919234
SAMPLE = load_json("tdx/tdx_quote_collateral.json")


class FakePccs(http.server.ThreadingHTTPServer):
    """Serves the sample collateral the way a PCCS does (dcap-qvl 0.7's requests)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PccsHandler)
        self.requests: list[str] = []
        self.fail = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _PccsHandler(http.server.BaseHTTPRequestHandler):
    server: FakePccs

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        path = urllib.parse.urlsplit(self.path).path
        quote = urllib.parse.quote
        headers: dict[str, str] = {}
        if self.server.fail:
            body, status = b"down", 503
        elif path == "/sgx/certification/v4/pckcrl":
            body, status = bytes.fromhex(SAMPLE["pck_crl"]), 200
            headers["SGX-PCK-CRL-Issuer-Chain"] = quote(SAMPLE["pck_crl_issuer_chain"], safe="")
        elif path == "/sgx/certification/v4/rootcacrl":
            body, status = SAMPLE["root_ca_crl"].encode(), 200  # a PCCS serves it as hex
        elif path == "/tdx/certification/v4/tcb":
            doc = '{"tcbInfo":%s,"signature":"%s"}' % (  # noqa: UP031 (exact bytes matter)
                SAMPLE["tcb_info"],
                SAMPLE["tcb_info_signature"],
            )
            body, status = doc.encode(), 200
            headers["TCB-Info-Issuer-Chain"] = quote(SAMPLE["tcb_info_issuer_chain"], safe="")
        elif path == "/tdx/certification/v4/qe/identity":
            doc = '{"enclaveIdentity":%s,"signature":"%s"}' % (  # noqa: UP031
                SAMPLE["qe_identity"],
                SAMPLE["qe_identity_signature"],
            )
            body, status = doc.encode(), 200
            headers["SGX-Enclave-Identity-Issuer-Chain"] = quote(
                SAMPLE["qe_identity_issuer_chain"], safe=""
            )
        else:
            body, status = b"not found", 404
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def pccs() -> Iterator[FakePccs]:
    server = FakePccs()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_collateral_next_update_is_the_earliest_next_update() -> None:
    collateral = Collateral.load(vector_path("tdx/tdx_quote_collateral.json"))
    assert collateral.fmspc == "B0C06F000000"
    assert collateral.next_update == NOW + 1  # MANIFEST: min(nextUpdate) - 1 == now


async def test_offline_file() -> None:
    source = OfflineCollateral(vector_path("tdx/tdx_quote_collateral.json"))
    collateral = await source.get_collateral(QUOTE)
    assert verify_quote(QUOTE, collateral=collateral, now=NOW).status == "UpToDate"


async def test_offline_file_for_another_platform_is_refused() -> None:
    source = OfflineCollateral(vector_path("tdx/tdx_quote_collateral.json"))
    with pytest.raises(CollateralError, match="FMSPC"):
        await source.get_collateral(load_bytes("tdx/tdx_quote_outdated"))


async def test_offline_folder_keyed_by_fmspc(tmp_path: Path) -> None:
    for name in ("tdx_quote", "tdx_quote_outdated"):
        collateral = Collateral.load(vector_path(f"tdx/{name}_collateral.json"))
        assert collateral.fmspc is not None
        (tmp_path / f"{collateral.fmspc}.json").write_text(collateral.json_text)
    source = OfflineCollateral(tmp_path)
    assert (await source.get_collateral(QUOTE)).fmspc == "B0C06F000000"
    outdated = await source.get_collateral(load_bytes("tdx/tdx_quote_outdated"))
    assert outdated.fmspc == "90C06F000000"
    (tmp_path / "B0C06F000000.json").unlink()
    with pytest.raises(CollateralError, match=r"B0C06F000000\.json"):
        await source.get_collateral(QUOTE)


@pytest.mark.parametrize(
    "text",
    ["not json", "{}", json.dumps({**SAMPLE, "tcb_info": "{}"}), json.dumps([1])],
)
def test_malformed_collateral_is_a_collateral_error(text: str) -> None:
    with pytest.raises(CollateralError):
        Collateral.from_json(text)


def test_unreadable_collateral_file(tmp_path: Path) -> None:
    with pytest.raises(CollateralError, match="cannot read"):
        Collateral.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe")
    with pytest.raises(CollateralError, match="UTF-8"):
        Collateral.load(tmp_path / "bad.json")


async def test_pccs_fetch_uses_the_pccs_paths_and_verifies(pccs: FakePccs, tmp_path: Path) -> None:
    source = PccsCollateral(pccs.url, tmp_path, clock=lambda: NOW)
    collateral = await source.get_collateral(QUOTE)
    assert {urllib.parse.urlsplit(p).path for p in pccs.requests} == {
        "/sgx/certification/v4/pckcrl",
        "/sgx/certification/v4/rootcacrl",
        "/tdx/certification/v4/tcb",
        "/tdx/certification/v4/qe/identity",
    }
    assert any("fmspc=B0C06F000000" in p for p in pccs.requests)
    assert verify_quote(QUOTE, collateral=collateral, now=NOW).status == "UpToDate"
    cached = tmp_path / "tdx-platform-B0C06F000000.json"
    assert cached.is_file()
    assert "pck_certificate_chain" not in json.loads(cached.read_text())


async def test_pccs_cache_is_used_until_next_update(pccs: FakePccs, tmp_path: Path) -> None:
    clock = [float(NOW - 100)]
    source = PccsCollateral(pccs.url, tmp_path, clock=lambda: clock[0])
    await source.get_collateral(QUOTE)
    hits = len(pccs.requests)
    await source.get_collateral(QUOTE)
    assert len(pccs.requests) == hits
    assert source.fetches == 1
    # A new source (a restarted process) reads the cache from disk too.
    restarted = PccsCollateral(pccs.url, tmp_path, clock=lambda: clock[0])
    await restarted.get_collateral(QUOTE)
    assert restarted.fetches == 0
    clock[0] = float(NOW + 1)  # at nextUpdate: the cached copy is stale
    await source.get_collateral(QUOTE)
    assert source.fetches == 2
    assert len(pccs.requests) > hits


async def test_pccs_without_cache_fetches_every_time(pccs: FakePccs) -> None:
    source = PccsCollateral(pccs.url)
    await source.get_collateral(QUOTE)
    await source.get_collateral(QUOTE)
    assert source.fetches == 2


async def test_corrupt_cache_file_is_refetched(pccs: FakePccs, tmp_path: Path) -> None:
    (tmp_path / "tdx-platform-B0C06F000000.json").write_text("garbage")
    source = PccsCollateral(pccs.url, tmp_path, clock=lambda: NOW)
    collateral = await source.get_collateral(QUOTE)
    assert collateral.fmspc == "B0C06F000000"
    assert source.fetches == 1


async def test_pccs_failure_is_a_collateral_error(pccs: FakePccs, tmp_path: Path) -> None:
    pccs.fail = True
    source = PccsCollateral(pccs.url, tmp_path)
    with pytest.raises(CollateralError, match="PCCS fetch"):
        await source.get_collateral(QUOTE)


def test_pccs_url_must_be_http() -> None:
    with pytest.raises(CollateralError):
        PccsCollateral("file:///etc/passwd")


def test_a_failed_pccs_fetch_leaves_no_foreign_runtime_threads(tmp_path: Path) -> None:
    """Issue 12 point 13, deterministically: ``dcap_qvl.get_collateral`` left Tokio worker
    threads that call back into the interpreter; one still inside such a call at interpreter
    exit crashed the process. The fetch must start no thread outside Python's knowledge."""
    script = tmp_path / "fetch.py"
    script.write_text(
        "import asyncio, pathlib, socket, threading\n"
        "from attestation.collateral import PccsCollateral\n"
        "from attestation.errors import CollateralError\n"
        "from tests.vectors import load_bytes\n"
        "sock = socket.socket(); sock.bind(('127.0.0.1', 0))\n"
        "url = 'http://127.0.0.1:%d' % sock.getsockname()[1]\n"
        "async def main():\n"
        "    try:\n"
        "        await PccsCollateral(url).get_collateral(load_bytes('tdx/tdx_quote'))\n"
        "    except CollateralError as exc:\n"
        "        print('error:', exc)\n"
        "asyncio.run(main())\n"
        "names = [p.read_text().strip() for p in pathlib.Path('/proc/self/task').glob('*/comm')]\n"
        "print('threads:', len(names), 'python threads:', threading.active_count())\n"
        "print('foreign:', sorted(n for n in names if 'tokio' in n))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error: PCCS fetch from" in result.stdout
    assert "foreign: []" in result.stdout
