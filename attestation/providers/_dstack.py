"""Quotes from the dstack guest agent: HTTP over its Unix socket, the ``GetQuote`` call.

The agent (Dstack-TEE/dstack, ``sdk/curl/api.md``) listens on ``/var/run/dstack.sock`` and
serves prpc methods at ``/<Method>``; a ``POST`` with ``Content-Type: application/json`` takes
and returns JSON. ``GetQuote`` takes ``{"report_data": "<hex, at most 64 bytes>"}`` and answers
``{"quote": "<hex>", "event_log": "<JSON string>", "report_data": "<hex>", "vm_config": ...}``;
failures are a non-200 status with ``{"error": "<message>"}``. The unversioned path is the
frozen v0 surface, kept on every agent since 0.5; dstack's v1 surface replaces ``GetQuote``
with ``Attest``, which this provider does not use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path

import httpx

from attestation.errors import EvidenceError, QuoteProviderError, QuoteProviderUnavailableError
from attestation.eventlog import EventLog, parse_dstack_event_log
from attestation.providers._http import read_bounded
from attestation.providers._types import ProviderName, QuoteResult, check_report_data

__all__ = ["DEFAULT_DSTACK_SOCKET", "MAX_DSTACK_RESPONSE_BYTES", "DstackProvider"]

logger = logging.getLogger(__name__)

DEFAULT_DSTACK_SOCKET = Path("/var/run/dstack.sock")
DEFAULT_TIMEOUT_S = 30.0
MAX_DSTACK_RESPONSE_BYTES = 16 * 1024 * 1024
_MAX_ERROR_CHARS = 200
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


class DstackProvider:
    """TDX quotes (and the event log) from the dstack guest agent."""

    name: ProviderName = "dstack"

    def __init__(
        self, socket_path: Path = DEFAULT_DSTACK_SOCKET, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._socket_path = Path(socket_path)
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"DstackProvider(socket_path={str(self._socket_path)!r})"

    async def get_quote(self, report_data: bytes) -> QuoteResult:
        data = check_report_data(report_data)
        if not self._socket_path.exists():
            raise QuoteProviderUnavailableError(f"dstack: no agent socket at {self._socket_path}")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._post("/GetQuote", {"report_data": data.hex()})
        except TimeoutError as exc:
            raise QuoteProviderError("dstack: GetQuote timed out") from exc
        if status != httpx.codes.OK:
            raise QuoteProviderError(f"dstack: GetQuote answered HTTP {status}{_error_text(body)}")
        quote, event_log = _parse_reply(body, data)
        logger.info(
            "dstack quote: %d bytes, %d events in %.3f s",
            len(quote),
            len(event_log.events) if event_log else 0,
            time.monotonic() - started,
        )
        return QuoteResult(quote=quote, provider=self.name, event_log=event_log)

    async def _post(self, path: str, payload: dict[str, str]) -> tuple[int, bytes]:
        transport = httpx.AsyncHTTPTransport(uds=str(self._socket_path))
        try:
            async with (
                httpx.AsyncClient(
                    transport=transport, base_url="http://dstack", timeout=self._timeout
                ) as client,
                client.stream("POST", path, json=payload) as response,
            ):
                body = await read_bounded(response, MAX_DSTACK_RESPONSE_BYTES, "dstack")
                return response.status_code, body
        except httpx.TimeoutException as exc:
            raise QuoteProviderError("dstack: GetQuote timed out") from exc
        except httpx.HTTPError as exc:
            raise QuoteProviderError(f"dstack: GetQuote failed ({type(exc).__name__})") from exc


def _error_text(body: bytes) -> str:
    """The agent's ``{"error": ...}`` message, shortened, for the exception text."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return ""
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return f": {decoded['error'][:_MAX_ERROR_CHARS]!r}"
    return ""


def _parse_reply(body: bytes, report_data: bytes) -> tuple[bytes, EventLog | None]:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise QuoteProviderError("dstack: GetQuote reply is not JSON") from exc
    if not isinstance(decoded, dict):
        raise QuoteProviderError("dstack: GetQuote reply is not a JSON object")
    quote_hex = decoded.get("quote")
    if not isinstance(quote_hex, str) or not _HEX.fullmatch(quote_hex):
        raise QuoteProviderError("dstack: GetQuote reply has no hex 'quote'")
    echoed = decoded.get("report_data")
    if echoed not in (None, "") and (
        not isinstance(echoed, str) or echoed.lower() != report_data.hex()
    ):
        raise QuoteProviderError("dstack: GetQuote answered for different report_data")
    raw_log = decoded.get("event_log")
    event_log: EventLog | None = None
    if raw_log not in (None, ""):
        if not isinstance(raw_log, str):
            raise QuoteProviderError("dstack: GetQuote 'event_log' is not a string")
        try:
            event_log = parse_dstack_event_log(raw_log)
        except EvidenceError as exc:
            raise QuoteProviderError(f"dstack: GetQuote event log is malformed ({exc})") from exc
    return bytes.fromhex(quote_hex), event_log
