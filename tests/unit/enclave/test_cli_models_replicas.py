"""``enclave models`` on several replicas: the URLs (repeated --url, --urls-file), one report
with each replica's id, exit status, document and errors; exit 1 if any replica failed."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import httpx
import pytest

from enclave.cli._models import _act_on_replicas, _urls
from enclave.cli._verify import InputError


def namespace(**values: object) -> argparse.Namespace:
    base: dict[str, object] = {"url": [], "urls_file": None, "models_action": "status"}
    return argparse.Namespace(**{**base, **values})


def test_urls_from_flags_and_a_file(tmp_path: Path) -> None:
    listed = tmp_path / "replicas.txt"
    listed.write_text("# the fleet\nhttps://b.example:8443\n\nhttps://c.example:8443  # eu\n")
    urls = _urls(namespace(url=["https://a.example:8443"], urls_file=str(listed)))
    assert urls == ["https://a.example:8443", "https://b.example:8443", "https://c.example:8443"]
    for bad in (
        namespace(),
        namespace(url=["http://a.example"]),
        namespace(url=["https://a.example", "https://a.example"]),
        namespace(urls_file=str(tmp_path / "missing.txt")),
    ):
        with pytest.raises(InputError):
            _urls(bad)


async def test_one_report_for_all_replicas_exit_1_if_one_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "c.example":
            return httpx.Response(
                503, json={"error": {"code": "model_not_ready", "message": "no model"}}
            )
        return httpx.Response(200, json={"proxy_status": "ready", "replica_id": f"r-{host[0]}"})

    def client(url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=url)

    out, err = io.StringIO(), io.StringIO()
    urls = ["https://a.example", "https://b.example", "https://c.example"]
    code = await _act_on_replicas(urls, client, namespace(), out, err)
    assert code == 1
    report = json.loads(out.getvalue())["replicas"]
    assert [(r["url"], r["replica_id"], r["exit"]) for r in report] == [
        ("https://a.example", "r-a", 0),
        ("https://b.example", "r-b", 0),
        ("https://c.example", None, 1),
    ]
    assert report[2]["errors"] == ["error: the service refused: HTTP 503 model_not_ready: no model"]
    assert "2 of 3 replicas succeeded" in err.getvalue()
    assert "https://c.example (replica id unknown): FAILED" in err.getvalue()


async def test_an_unreachable_replica_is_reported_not_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "b.example":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"replica_id": "r-a"})

    def client(url: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=url)

    out, err = io.StringIO(), io.StringIO()
    code = await _act_on_replicas(
        ["https://a.example", "https://b.example"], client, namespace(), out, err
    )
    assert code == 1
    report = json.loads(out.getvalue())["replicas"]
    assert report[1]["errors"] == ["error: request failed: ConnectError"]
    assert report[0]["exit"] == 0
