"""Status push from ``enclave serve`` (a process) to a real HTTP receiver (another process):
the start push, each transition with its own generation, interval pushes, the instance and the
certificate it comes from; a receiver that hangs or fails never holds up a load."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server._process import PUSH_TOKEN, Receiver, Serve, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Any]:
    started: list[Receiver] = []

    def start(mode: str) -> Receiver:
        receiver = Receiver(mode, tmp_path / f"received-{mode}.jsonl")
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def test_start_transitions_and_interval_pushes_reach_a_real_receiver(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("ok")
    serve = Serve(tmp_path, receiver.url, "--push-interval", "0.5")
    try:
        start = receiver.wait_for(lambda d: d["push_reason"] == "start", "at start")
        assert start["proxy_status"] == "idle"
        assert start["instance_id"] == "slot-7"
        assert start["certificate_sha256"] == serve.certificate_sha256()
        boot_id = start["boot_id"]

        status = serve.load("tiny")
        loading = receiver.wait_for(
            lambda d: d["push_reason"] == "transition" and d["proxy_status"] == "loading",
            "for loading",
        )
        ready = receiver.wait_for(
            lambda d: d["push_reason"] == "transition" and d["proxy_status"] == "ready",
            "for ready",
        )
        # Each transition carries the generation of the load it belongs to.
        assert loading["generation"] == ready["generation"] == status["generation"]
        assert loading["loaded_model"] == "tiny"
        assert ready["loaded_model"] == "tiny"
        assert ready["loaded_model_digest"] == status["loaded_model_digest"]
        # The ready document names the certificate reissued with the model claim.
        assert ready["certificate_sha256"] == serve.certificate_sha256()
        assert ready["certificate_sha256"] != start["certificate_sha256"]

        interval = receiver.wait_for(
            lambda d: d["push_reason"] == "interval" and d["proxy_status"] == "ready",
            "at the interval",
        )
        assert interval["generation"] == status["generation"]
        assert {d["boot_id"] for d in receiver.documents()} == {boot_id}
        assert {e["auth"] for e in receiver.entries()} == {f"Bearer {PUSH_TOKEN}"}
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') >= 4
        assert serve.metric('enclave_status_pushes_total{outcome="failed"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert PUSH_TOKEN not in output
    assert "Traceback" not in output, output


def test_a_hanging_receiver_holds_up_neither_loads_nor_the_certificate(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("hang")
    # A push waits up to 10 minutes for this receiver: a pusher that held up the lifecycle's
    # hooks would keep the ready certificate (reissued by the hook before it) from the next load.
    serve = Serve(tmp_path, receiver.url, env={"ENCLAVE_PUSH_TIMEOUT_SECONDS": "600"})
    try:
        idle_certificate = serve.certificate_sha256()
        assert serve.load("tiny")["loaded_model"] == "tiny"
        wait_until(lambda: serve.certificate_sha256() != idle_certificate, "a ready certificate")
        ready_certificate = serve.certificate_sha256()
        serve.unload("tiny")
        wait_until(lambda: serve.certificate_sha256() != ready_certificate, "an idle certificate")
        assert serve.load("tiny")["loaded_model"] == "tiny"
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert "Traceback" not in output, output


def test_a_failing_receiver_is_retried_counted_and_does_not_hold_up_loads(
    tmp_path: Path, receivers: Any
) -> None:
    receiver = receivers("error")
    serve = Serve(tmp_path, receiver.url, "--push-interval", "0.2")
    try:
        assert serve.load("tiny")["loaded_model"] == "tiny"
        wait_until(
            lambda: serve.metric('enclave_status_pushes_total{outcome="failed"}') >= 3,
            "failed pushes counted",
        )
        assert serve.metric('enclave_status_pushes_total{outcome="sent"}') == 0
        output = serve.output()
    finally:
        serve.close()
    assert "status push refused: HTTP 500" in output
    assert "Traceback" not in output, output


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_trickling_receiver_is_cut_at_the_push_deadline(tmp_path: Path, receivers: Any) -> None:
    """Regression (issue 20 #8): a receiver answering a byte every 0.5 s (under the 10 s read
    timeout each time) held one push for over 36 s; the push deadline cuts it and the next
    push goes out."""
    receiver = receivers("trickle")
    serve = Serve(
        tmp_path,
        receiver.url,
        "--push-interval",
        "0.5",
        env={"ENCLAVE_PUSH_DEADLINE_SECONDS": "1.5", "ENCLAVE_PUSH_TIMEOUT_SECONDS": "10"},
    )
    try:
        wait_until(lambda: len(receiver.entries()) >= 3, "three pushes")
        arrivals = [entry["at"] for entry in receiver.entries()[:3]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        failed = serve.metric('enclave_status_pushes_total{outcome="failed"}')
    finally:
        output = serve.output()
        serve.close()
    print(f"\ntrickling receiver: pushes {gaps} s apart (deadline 1.5 s, backoff 0.1-0.2 s)")
    assert all(gap < 5 for gap in gaps), gaps
    assert failed >= 2
    assert "status push failed: deadline" in output


def test_a_huge_answer_is_not_read(tmp_path: Path, receivers: Any) -> None:
    """Regression (issue 20 #8): a 400 MiB answer grew the service from 92 to 2,792 MiB (it
    was read whole); now at most push_max_answer_bytes are read and the push still counts."""
    receiver = receivers("huge")
    serve = Serve(tmp_path, receiver.url, "--push-interval", "0.3")
    try:
        before = _rss_mib(serve.process.pid)
        wait_until(lambda: len(receiver.entries()) >= 5, "five pushes")
        wait_until(lambda: serve.metric('enclave_status_pushes_total{outcome="sent"}') >= 5, "sent")
        after = _rss_mib(serve.process.pid)
    finally:
        output = serve.output()
        serve.close()
    print(f"\nfive 400 MiB answers: service RSS {before:.0f} -> {after:.0f} MiB")
    assert after - before < 100
    assert "answer over 65536 bytes, not read further" in output
