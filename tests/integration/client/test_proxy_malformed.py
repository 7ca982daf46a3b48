"""Issue 20 point 9: bodies that Python's json reads but that are not JSON (NaN, Infinity,
-Infinity, 1e999) or not Unicode (a lone surrogate such as ``\\ud800``), through the real proxy
against the real service with the development engine: every one is a 400 in the shape of the
route (Anthropic's on ``/v1/messages``, the service's OpenAI one on ``/v1/chat/completions``),
never a 5xx, and nothing like a traceback reaches the log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio

from enclave.client import AsyncOhttpTransport
from enclave.client._proxy import build_proxy_app
from tests.integration.client.conftest import Running, serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Values that are not JSON (Python's json reads them) or that no UTF-8 encoder can write.
BAD_VALUES = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    '"\\ud800"',
    '"\\udfff"',
    '"a\\ud83d"',  # a high surrogate without its low half
)
#: Where they go: templates with ``@`` for the bad value (or key).
ANTHROPIC_PLACES = (
    '{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": @}]}',
    '{"model": "tiny", "max_tokens": 4, "temperature": @, "messages": '
    '[{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "top_p": @, "messages": '
    '[{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "system": @, "messages": '
    '[{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "metadata": {"user_id": @}, "messages": '
    '[{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": '
    '[{"type": "text", "text": @}]}]}',
    '{"model": "tiny", "max_tokens": 4, "tools": [{"name": "t", "input_schema": '
    '{"type": "object", "default": @}}], "messages": [{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "stop_sequences": [@], "messages": '
    '[{"role": "user", "content": "hi"}]}',
)
OPENAI_PLACES = (
    '{"model": "tiny", "messages": [{"role": "user", "content": @}], "max_tokens": 4}',
    '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": @}',
    '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": @}}',
)
#: A lone surrogate as a key, and values nested deep.
EXTRA_ANTHROPIC = (
    '{"model": "tiny", "max_tokens": 4, "\\ud800": 1, "messages": '
    '[{"role": "user", "content": "hi"}]}',
    '{"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], '
    '"tool_choice": {"type": "auto", "x": [[[NaN]]]}}',
    '{"model": "\\ud800", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}',
    "[" * 100_000 + "]" * 100_000,  # too deep for the parser
    '{"model": "tiny", "max_tokens": 4, "temperature": ' + "9" * 5000 + "}",  # too long an int
)


def _bodies(places: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[str]:
    return [place.replace("@", value) for place in places for value in BAD_VALUES] + list(extra)


ANTHROPIC_BODIES = _bodies(ANTHROPIC_PLACES, EXTRA_ANTHROPIC)
OPENAI_BODIES = _bodies(
    OPENAI_PLACES, ('{"model": "\\ud800", "messages": []}', "[" * 100_000 + "]" * 100_000)
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _captured() -> Iterator[_Records]:
    """What the root logger and uvicorn's own (which do not propagate) receive."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def proxy_url(running: Running) -> AsyncIterator[str]:
    transport = AsyncOhttpTransport(running.url, running.verifier())
    async with serve(build_proxy_app(transport, compat="both")) as url:
        yield url


def _no_traceback(records: _Records) -> None:
    for record in records.records:
        assert record.exc_info is None, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()


@pytest.mark.parametrize("body", ANTHROPIC_BODIES, ids=range(len(ANTHROPIC_BODIES)))
async def test_anthropic_route_answers_400_in_anthropic_shape(proxy_url: str, body: str) -> None:
    with _captured() as records:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                proxy_url + "/v1/messages",
                content=body.encode(),
                headers={"content-type": "application/json"},
            )
    assert response.status_code == 400, response.text
    document = response.json()
    assert document["type"] == "error"
    assert document["error"]["type"] == "invalid_request_error"
    assert isinstance(document["error"]["message"], str)
    _no_traceback(records)


@pytest.mark.parametrize("body", OPENAI_BODIES, ids=range(len(OPENAI_BODIES)))
async def test_openai_route_answers_400_in_openai_shape(proxy_url: str, body: str) -> None:
    with _captured() as records:
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                proxy_url + "/openai/v1/chat/completions",
                content=body.encode(),
                headers={"content-type": "application/json"},
            )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"
    _no_traceback(records)


async def test_the_corpus_is_the_size_the_issue_names() -> None:
    assert len(ANTHROPIC_BODIES) + len(OPENAI_BODIES) >= 60
