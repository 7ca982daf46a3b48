"""The local proxy's refusals: each upstream failure maps to a vocabulary code and a status a
client can act on (413 stays 413, a busy gateway is a 503 with Retry-After, a relay's 401 says
the relay refused), and connection failures are told apart by kind (real sockets)."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from enclave.client._neterrors import describe_connection_error
from enclave.client._proxy_errors import refusal_for
from enclave.client.errors import AttestationFailed, GatewayRefused


@pytest.mark.parametrize(
    ("status", "relay", "code", "http"),
    [
        (413, False, "body_too_large", 413),
        (429, False, "gateway_overloaded", 503),
        (503, True, "gateway_overloaded", 503),
        (401, True, "relay_refused", 502),
        (403, True, "relay_refused", 502),
        (401, False, "gateway_refused", 502),
        (400, False, "gateway_refused", 502),
    ],
)
def test_gateway_refusals(status: int, relay: bool, code: str, http: int) -> None:
    refusal = refusal_for(GatewayRefused(status), through_relay=relay)
    assert (refusal.code, refusal.status) == (code, http)
    if code == "gateway_overloaded":
        assert refusal.headers["Retry-After"] == "1"


@pytest.mark.parametrize("state", ["ohttp_key_unavailable", "replay_store_unavailable"])
def test_a_replica_that_cannot_serve_says_why(state: str) -> None:
    refusal = refusal_for(GatewayRefused(503, state), through_relay=True)
    assert (refusal.code, refusal.status) == ("gateway_overloaded", 503)
    assert state in refusal.message
    assert refusal.headers["Retry-After"] == "1"


def test_only_known_state_codes_are_taken_from_a_503() -> None:
    from enclave.client._messages import gateway_state_code

    body = b'{"error": {"code": "replay_store_unavailable"}}'
    assert gateway_state_code(503, body) == "replay_store_unavailable"
    assert gateway_state_code(400, body) is None
    assert gateway_state_code(503, b'{"error": {"code": "<script>"}}') is None
    assert gateway_state_code(503, b"not json") is None


def test_attestation_failures() -> None:
    limited = refusal_for(AttestationFailed("report_rate_limited", "6"), through_relay=False)
    assert (limited.status, limited.headers["Retry-After"]) == (503, "6")
    assert "rate-limited" in limited.message
    gone = refusal_for(AttestationFailed("endpoint_unreachable", "timed out"), through_relay=False)
    assert (gone.code, gone.status) == ("upstream_unreachable", 502)
    wrong = refusal_for(AttestationFailed("mrtd_not_allowed"), through_relay=False)
    assert (wrong.code, wrong.status) == ("attestation_unverified", 503)
    assert refusal_for(httpx.ReadTimeout("x"), through_relay=False).status == 504


def _error_of(url: str, **kwargs: object) -> BaseException:
    with pytest.raises(httpx.HTTPError) as caught:
        httpx.get(url, timeout=5, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_connection_refused_dns_and_plain_port_are_told_apart() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        refused = _error_of(f"https://127.0.0.1:{port}/")
    assert "connection refused" in describe_connection_error(refused)
    unknown = _error_of("https://no-such-host.invalid/")
    assert "does not resolve" in describe_connection_error(unknown)

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer_plain_http() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=answer_plain_http, daemon=True)
    thread.start()
    plain = _error_of(f"https://127.0.0.1:{server.getsockname()[1]}/", verify=False)
    thread.join(10)
    server.close()
    assert "does not speak TLS" in describe_connection_error(plain)
