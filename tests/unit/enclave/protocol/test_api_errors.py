"""The one error vocabulary (enclave.protocol.api): every body has the same shape, the type
follows from the status, every code a package can send is in it, and no other module builds
an error body of its own."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from enclave.protocol.api import (
    ERRORS,
    GATEWAY_PATH,
    KEYS_PATH,
    REPORT_PATH,
    error_body,
    error_document,
    error_type,
    sse_error_event,
)
from model_manager._errorcodes import MESSAGES

ROOT = Path(__file__).resolve().parents[4]
EXPECTED_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    417: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
    504: "server_error",
}


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_code_renders_the_one_shape_with_the_type_of_its_status(code: str) -> None:
    document = error_document(code)
    assert list(document) == ["error"]
    error = document["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert error["code"] == code
    assert error["param"] is None
    assert error["type"] == EXPECTED_TYPES[ERRORS[code].status]
    assert json.loads(error_body(code)) == document


def test_500s_are_never_labelled_invalid_request() -> None:
    for status in (500, 502, 503, 504):
        assert error_type(status) != "invalid_request_error"
    assert error_type(429) == "rate_limit_error"


def test_param_and_message_are_carried_and_unknown_codes_refused() -> None:
    error = error_document("invalid_nonce", param="nonce", message="fixed text")["error"]
    assert (error["param"], error["message"]) == ("nonce", "fixed text")
    with pytest.raises(ValueError, match="unknown error code"):
        error_document("no_such_code")


def test_the_sse_error_event_is_one_data_line() -> None:
    event = sse_error_event("engine_stream_failed")
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert json.loads(event[len(b"data: ") :])["error"]["code"] == "engine_stream_failed"


def test_every_lifecycle_code_is_in_the_vocabulary() -> None:
    assert set(MESSAGES) <= set(ERRORS)


def test_the_wire_paths() -> None:
    assert (KEYS_PATH, GATEWAY_PATH, REPORT_PATH) == (
        "/.well-known/ohttp-keys",
        "/.well-known/ohttp-gateway",
        "/v1/attestation/report",
    )


def _error_literals(path: Path) -> list[int]:
    """Lines where a dict literal ``{"error": {... "code": ...}}`` is built."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if (
                isinstance(key, ast.Constant)
                and key.value == "error"
                and isinstance(value, ast.Dict)
                and any(isinstance(k, ast.Constant) and k.value == "code" for k in value.keys)
            ):
                lines.append(node.lineno)
    return lines


def test_no_module_but_the_vocabulary_builds_an_error_body() -> None:
    own = ROOT / "enclave" / "protocol" / "api.py"
    offenders = []
    # The product packages only: the development package (enclave_dev) is not scanned; its
    # engine imitates vLLM's own error bodies, on purpose.
    for package in ("enclave", "model_manager", "attestation"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == own:
                continue
            offenders += [f"{path.relative_to(ROOT)}:{line}" for line in _error_literals(path)]
    assert offenders == []


_RENDERERS = frozenset(
    {"ApiError", "error_response", "inner_json_error", "_RefusedError", "sse_error_event", "_error"}
)


def _codes_used(path: Path) -> list[tuple[int, str]]:
    """(line, code) for each string literal handed to an error renderer as its first argument."""
    used = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        first = node.args[0]
        if name in _RENDERERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
            used.append((node.lineno, first.value))
    return used


def test_every_code_a_module_sends_is_in_the_vocabulary() -> None:
    unknown = [
        f"{path.relative_to(ROOT)}:{line} {code}"
        for package in ("enclave", "model_manager")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "_anthropic.py"
        for line, code in _codes_used(path)
        if code not in ERRORS
    ]
    assert unknown == []


def test_one_definition_of_the_wire_constants() -> None:
    """The 16 KiB chunk minimum, the paths and the problem URIs are written once."""
    needles = {
        "16384": "enclave/protocol/chunked.py",
        '"/.well-known/ohttp-gateway"': "enclave/protocol/api.py",
        '"/.well-known/ohttp-keys"': "enclave/protocol/api.py",
        '"/v1/attestation/report"': "enclave/protocol/api.py",
        "http-problem-types#ohttp-key": "enclave/protocol/ohttp.py",
        "http-problem-types#date": "enclave/protocol/ohttp.py",
    }
    for needle, home in needles.items():
        found = sorted(
            str(path.relative_to(ROOT))
            for package in ("enclave", "model_manager", "attestation")
            for path in (ROOT / package).rglob("*.py")
            if needle in path.read_text()
        )
        assert found == [home], needle
