"""``enclave serve --data-plane-workers 2`` as a process: one owner, two workers on one port.

Requests spread over both workers (the per-worker request counts of the one metrics
exposition); the lifecycle API and the metrics are the owner's, reached through either worker;
an OHTTP request accepted by one worker is refused as a replay by the other; a certificate
reissued while a stream is open reaches new connections of every worker and the stream ends
whole; a worker killed with SIGKILL is restarted, its stream is cut (the chunked OHTTP client
sees no final chunk: truncated), and new requests are served."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave.protocol import bhttp
from enclave.protocol._keyconfig import KeyConfig, decode_key_configs
from tests.integration.server._process import METRICS_AUTH, Serve, wait_until
from tests.integration.server.conftest import chat_request, encapsulate
from tests.integration.server.test_serve_process import free_port

pytestmark = pytest.mark.slow

WORKERS = 2
METRICS_PORT = free_port()


def worker_pids(serve: Serve) -> set[int]:
    """The owner's children that are data-plane workers."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == serve.process.pid and b"enclave.workers" in command:
            found.add(int(entry.name))
    return found


def per_worker(serve: Serve, name: str) -> dict[str, float]:
    text = serve.client.get("/metrics", headers=METRICS_AUTH).text
    pattern = re.compile(rf'^{name}\{{worker="(\d+)"\}} ([0-9.e+]+)$', re.MULTILINE)
    return {worker: float(value) for worker, value in pattern.findall(text)}


def fresh_get(port: int, path: str, **kwargs: object) -> httpx.Response:
    """One request on a connection of its own (a new source port: the kernel picks a worker)."""
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False) as client:
        return client.get(path, **kwargs)  # type: ignore[arg-type]


MODELS_TOML = """
[models.tiny]
path = "tiny"

[models.slow]
path = "tiny"
extra_args = ["--dev-tokens-per-second", "2"]
"""


def posts_per_worker(serve: Serve, action: Callable[[], None]) -> dict[str, float]:
    """How many requests each worker answered during ``action``: two scrapes on the helper's
    keep-alive connection name the worker that connection is on (each scrape is counted in
    the next one), whose own scrape is then taken off."""
    name = "enclave_data_plane_worker_requests_total"
    for _ in range(10):  # until nothing else ended between the two scrapes
        first = per_worker(serve, name)
        second = per_worker(serve, name)
        changed = {w: second[w] - first.get(w, 0.0) for w in second}
        scraper = [w for w, delta in changed.items() if delta == 1.0]
        if len(scraper) == 1 and sum(changed.values()) == 1.0:
            break
    else:
        raise AssertionError(f"requests kept ending between two scrapes: {first}, {second}")
    action()
    third = per_worker(serve, name)
    served = {w: third[w] - second.get(w, 0.0) for w in third}
    served[scraper[0]] -= 1.0
    return served


def key_config(port: int) -> KeyConfig:
    response = fresh_get(port, "/.well-known/ohttp-keys")
    assert response.status_code == 200
    return decode_key_configs(response.content)[0]


def post_fresh(port: int, body: bytes) -> httpx.Response:
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=120) as client:
        response = client.post(
            "/.well-known/ohttp-gateway",
            content=body,
            headers={"content-type": "message/ohttp-chunked-req", "incremental": "?1"},
        )
        response.read()
        return response


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("workers")
    (tmp / "models").mkdir()
    (tmp / "models" / "models.toml").write_text(MODELS_TOML)
    running = Serve(
        tmp,
        None,
        "--data-plane-workers", str(WORKERS),
        "--certificate-lifetime", "60",
        env={
            "ENCLAVE_ENGINE_STALL_TIMEOUT_SECONDS": "30",
            "ENCLAVE_METRICS_PORT": str(METRICS_PORT),
        },
    )  # fmt: skip
    try:
        wait_until(lambda: len(worker_pids(running)) == WORKERS, "both workers up")
        running.load("tiny")
        yield running
    finally:
        running.close()


def test_requests_spread_over_both_workers(serve: Serve) -> None:
    before = per_worker(serve, "enclave_data_plane_worker_requests_total")
    for _ in range(40):
        assert fresh_get(serve.port, "/v1/models").status_code == 200
    after = per_worker(serve, "enclave_data_plane_worker_requests_total")
    assert set(after) == {"0", "1"}
    served = {worker: after[worker] - before.get(worker, 0.0) for worker in after}
    assert all(count > 0 for count in served.values()), served
    assert per_worker(serve, "enclave_data_plane_worker_up") == {"0": 1.0, "1": 1.0}
    # The metrics listener (the owner's, plain HTTP on loopback) gives the same one exposition.
    listener = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", headers=METRICS_AUTH).text
    assert 'enclave_data_plane_worker_up{worker="1"} 1.0' in listener
    assert "enclave_http_requests_total" in listener  # the workers' counts, summed
    # The lifecycle API is the owner's, through any worker.
    status = fresh_get(serve.port, "/v1/models/status").json()
    assert status["proxy_status"] == "ready"
    assert status["loaded_model"] == "tiny"


def test_a_replay_to_the_other_worker_is_refused(serve: Serve) -> None:
    config = key_config(serve.port)
    body, decoder = encapsulate(config, chat_request("once only", max_tokens=4))
    first = post_fresh(serve.port, body)
    assert first.status_code == 200
    plaintext = b"".join(decoder.feed(first.content)) + decoder.finish()
    assert bhttp.decode_response(plaintext).status == 200
    statuses: list[int] = []

    def replay() -> None:
        statuses.extend(post_fresh(serve.port, body).status_code for _ in range(16))

    served = posts_per_worker(serve, replay)
    assert statuses == [400] * 16  # every replay refused, whichever worker took it
    assert served["0"] >= 1, served  # and both workers took some
    assert served["1"] >= 1, served


def stream_events(port: int, model: str, max_tokens: int, opened: threading.Event) -> list[str]:
    """A plaintext streamed chat on a connection of its own; its ``data:`` lines."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "keep going"}],
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    events = []
    with (
        httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=False, timeout=120) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
                opened.set()
    return events


def test_a_reissue_while_a_stream_is_open_does_not_drop_it(serve: Serve) -> None:
    serve.load("slow")  # 2 tokens/s: 120 tokens take 60 s, past the reissue at 48 s
    before = serve.certificate_sha256()
    opened = threading.Event()
    result: list[list[str]] = []
    thread = threading.Thread(
        target=lambda: result.append(stream_events(serve.port, "slow", 120, opened))
    )
    thread.start()
    assert opened.wait(30)
    wait_until(lambda: serve.certificate_sha256() != before, "a reissued certificate")
    # Every worker swapped it in: new connections, wherever the kernel puts them, get it.
    after = {serve.certificate_sha256() for _ in range(12)}
    assert before not in after
    assert len(after) == 1
    assert thread.is_alive()  # the stream was open across the reissue
    thread.join(120)
    events = result[0]
    assert events[-1] == "[DONE]"
    tokens = [json.loads(event) for event in events[:-1]]
    assert sum(1 for t in tokens if t["choices"] and t["choices"][0]["delta"].get("content")) == 120


class OhttpStream(threading.Thread):
    """A chunked OHTTP stream on a connection of its own, read in a thread: ``opened`` once a
    piece decrypted, then ``outcome`` "complete" (the final chunk came) or the exception."""

    def __init__(self, port: int, body: bytes, decoder: Any) -> None:
        super().__init__(daemon=True)
        self.port, self.body, self.decoder = port, body, decoder
        self.opened = threading.Event()
        self.client_port = 0
        self.outcome: object = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(
                    base_url=f"https://127.0.0.1:{self.port}", verify=False, timeout=120
                ) as client,
                client.stream(
                    "POST",
                    "/.well-known/ohttp-gateway",
                    content=self.body,
                    headers={"content-type": "message/ohttp-chunked-req", "incremental": "?1"},
                ) as response,
            ):
                stream = response.extensions["network_stream"]
                self.client_port = int(stream.get_extra_info("client_addr")[1])
                for piece in response.iter_raw():
                    if self.decoder.feed(piece):
                        self.opened.set()
            self.decoder.finish()
            self.outcome = "complete"
        except Exception as exc:  # the cut: a transport error or the decoder's truncation
            self.outcome = exc
        self.opened.set()


def holder_of(serve: Serve, client_port: int) -> int | None:
    """The worker process holding the service's end of the connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == serve.port and int(remote.split(":")[1], 16) == (
            client_port
        ):
            inode = fields[9]
    if inode is None:
        return None
    for pid in worker_pids(serve):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


def test_a_killed_worker_is_restarted_and_the_other_serves_on(serve: Serve) -> None:
    if serve.client.get("/v1/models/status").json()["loaded_model"] != "slow":
        serve.load("slow")
    config = key_config(serve.port)
    streams: dict[int, OhttpStream] = {}  # worker pid -> a stream it holds
    started: list[OhttpStream] = []
    for attempt in range(20):
        body, decoder = encapsulate(
            config, chat_request(f"stream {attempt}", model="slow", max_tokens=30)
        )
        stream = OhttpStream(serve.port, body, decoder)
        stream.start()
        started.append(stream)
        assert stream.opened.wait(30)
        holder = holder_of(serve, stream.client_port)
        assert holder is not None
        streams.setdefault(holder, stream)
        if len(streams) == WORKERS:
            break
    assert len(streams) == WORKERS, "every stream landed on one worker"
    victim, survivor = sorted(streams)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: _dead(victim), "the killed worker gone")
    # The survivor takes every new connection at once (the dead one's socket is gone).
    for _ in range(8):
        assert fresh_get(serve.port, "/v1/models").status_code == 200
    streams[victim].join(60)
    assert streams[victim].outcome not in (None, "complete")  # the client knows it was cut
    streams[survivor].join(60)
    assert streams[survivor].outcome == "complete"  # the other worker's stream ended whole
    wait_until(
        lambda: len(worker_pids(serve)) == WORKERS and victim not in worker_pids(serve),
        "the killed worker restarted",
    )
    wait_until(lambda: _answers(serve.port), "new requests served")
    restarts = per_worker(serve, "enclave_data_plane_worker_restarts_total")
    assert sorted(restarts.values()) == [0.0, 1.0]
    assert survivor in worker_pids(serve)
    for stream in started:  # none of them outlives the test
        stream.join(60)


def _dead(pid: int) -> bool:
    """Gone, or a zombie (its sockets are closed) the owner has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _answers(port: int) -> bool:
    try:
        return fresh_get(port, "/ready").status_code == 200
    except httpx.TransportError:
        return False


def test_the_report_budget_holds_across_workers(serve: Serve) -> None:
    """Reports are answered by the owner: one client's budget (10 a minute) is one budget,
    whichever worker took each connection."""
    statuses: list[int] = []

    def ask() -> None:
        for n in range(14):
            nonce = f"{n:064x}"
            statuses.append(
                fresh_get(serve.port, f"/v1/attestation/report?nonce={nonce}").status_code
            )

    served = posts_per_worker(serve, ask)
    assert statuses == [200] * 10 + [429] * 4
    assert served["0"] >= 1, served
    assert served["1"] >= 1, served
