"""Quotes from the Confidential Containers attestation agent (AA), through its REST API server.

Inside a CoCo (Kata) pod's TD, ``api-server-rest`` (confidential-containers/guest-components)
listens on ``127.0.0.1:8006`` and forwards ``GET /aa/evidence`` to the AA over ttRPC. It
refuses non-loopback peers (403) and serves ``/aa`` only when started with the
``attestation`` or ``all`` feature (kata: ``agent.guest_components_rest_api=...``; 404
otherwise).

How runtime_data reaches REPORTDATA (checked in the sources; docs/attestation-providers.md
cites them): the AA's TDX attester refuses more than 64 bytes, zero-pads to 64 and requests
the quote over those bytes verbatim; nothing is hashed. But the REST server passes the
``runtime_data`` query value on as the UTF-8 bytes of the percent-decoded string (lossy: a
byte that is not valid UTF-8 becomes U+FFFD), so arbitrary bytes need ``encoding=base64``
(URL-safe alphabet, no padding; guest-components PR #1487). We always send the full 64 bytes
that way. A server older than that either answers 405 (it allowed exactly one query
parameter) or ignores ``encoding`` and hands the AA the 86 characters of base64 text, which
the AA refuses as longer than 64 bytes: both fail closed. As a last line, the provider parses
the returned quote and refuses it unless its report_data is exactly ours.

The reply (``application/octet-stream``) is the TDX attester's evidence JSON:
``{"quote": "<standard base64>", "cc_eventlog": "<standard base64 of the CCEL log area>" |
null, ...}``; other keys are ignored. Any other shape (e.g. the AA's ``sample`` attester on a
guest it does not recognise as a TEE, or Azure's vTPM evidence) is refused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import time

import httpx

from attestation.errors import (
    EvidenceError,
    QuoteParseError,
    QuoteProviderError,
    QuoteProviderUnavailableError,
)
from attestation.eventlog import EventLog, parse_ccel
from attestation.providers._http import read_bounded
from attestation.providers._types import ProviderName, QuoteResult, check_report_data
from attestation.quote import parse_quote

__all__ = [
    "COCO_EVIDENCE_PATH",
    "DEFAULT_COCO_AA_URL",
    "MAX_COCO_RESPONSE_BYTES",
    "CocoAttestationAgentProvider",
]

logger = logging.getLogger(__name__)

DEFAULT_COCO_AA_URL = "http://127.0.0.1:8006"
COCO_EVIDENCE_PATH = "/aa/evidence"
DEFAULT_TIMEOUT_S = 30.0
MAX_COCO_RESPONSE_BYTES = 16 * 1024 * 1024
_MAX_ERROR_CHARS = 200
_STATUS_HINTS = {
    403: " (the API server refuses callers that are not on loopback)",
    404: (
        " (no /aa route: the API server runs without the attestation feature; set "
        "agent.guest_components_rest_api=attestation on the guest kernel command line)"
    ),
    405: " (an api-server-rest too old for encoding=base64, guest-components PR #1487)",
}
_OLD_SERVER_HINT = (
    "; an api-server-rest that ignores encoding=base64 (before guest-components PR #1487) "
    "hands the AA the base64 text instead of the bytes"
)
_REMOTE_WARNING = (
    "INSECURE: the CoCo attestation agent URL %s is not a loopback address; a quote fetched "
    "over the network may come from another machine's agent"
)


def _check_base_url(base_url: str, *, allow_remote: bool) -> httpx.URL:
    """An ``http://<loopback IP literal>[:port]`` origin; anything else is a ``ValueError``.

    Host names (even ``localhost``) are refused: in a pod ``/etc/hosts`` comes from the host.
    """
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError("the CoCo attestation agent URL is not a URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("the CoCo attestation agent URL must be an http(s):// origin")
    if url.userinfo or url.query or url.fragment or url.path not in ("", "/"):
        raise ValueError("the CoCo attestation agent URL must be a bare origin (no path/query)")
    if allow_remote:
        return url.copy_with(path="/")
    try:
        loopback = ipaddress.ip_address(url.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            "the CoCo attestation agent URL must be a loopback IP literal (127.0.0.1 or ::1); "
            "insecure_allow_remote_agent permits others"
        )
    return url.copy_with(path="/")


class CocoAttestationAgentProvider:
    """TDX quotes (and the CCEL event log) from the CoCo attestation agent's REST API."""

    name: ProviderName = "coco"

    def __init__(
        self,
        base_url: str = DEFAULT_COCO_AA_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        insecure_allow_remote_agent: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = _check_base_url(base_url, allow_remote=insecure_allow_remote_agent)
        self._remote = insecure_allow_remote_agent
        self._timeout = timeout
        if self._remote:
            logger.warning(_REMOTE_WARNING, self._url)

    def __repr__(self) -> str:
        return f"CocoAttestationAgentProvider(base_url={str(self._url)!r})"

    async def get_quote(self, report_data: bytes) -> QuoteResult:
        data = check_report_data(report_data)
        if self._remote:
            logger.warning(_REMOTE_WARNING, self._url)
        started = time.monotonic()
        params = {
            "runtime_data": base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii"),
            "encoding": "base64",
        }
        try:
            async with asyncio.timeout(self._timeout):
                status, body = await self._get(params)
        except TimeoutError as exc:
            raise QuoteProviderError("coco: the attestation agent timed out") from exc
        if status != httpx.codes.OK:
            raise QuoteProviderError(
                f"coco: the attestation agent answered HTTP {status}"
                f"{_STATUS_HINTS.get(status, '')}{_error_text(body)}"
            )
        quote, event_log = _parse_evidence(body, data)
        logger.info(
            "coco quote: %d bytes, %d events in %.3f s",
            len(quote),
            len(event_log.events) if event_log else 0,
            time.monotonic() - started,
        )
        return QuoteResult(quote=quote, provider=self.name, event_log=event_log)

    async def _get(self, params: dict[str, str]) -> tuple[int, bytes]:
        try:
            async with (
                httpx.AsyncClient(
                    base_url=self._url,
                    timeout=self._timeout,
                    trust_env=False,
                    follow_redirects=False,
                ) as client,
                client.stream("GET", COCO_EVIDENCE_PATH, params=params) as response,
            ):
                body = await read_bounded(response, MAX_COCO_RESPONSE_BYTES, "coco")
                return response.status_code, body
        except httpx.TimeoutException as exc:
            raise QuoteProviderError("coco: the attestation agent timed out") from exc
        except httpx.ConnectError as exc:
            raise QuoteProviderUnavailableError(
                f"coco: no attestation agent API at {self._url} (is "
                "agent.guest_components_rest_api set for this pod?)"
            ) from exc
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            raise QuoteProviderError(f"coco: evidence request failed ({name})") from exc


def _error_text(body: bytes) -> str:
    """The server's error text (plain text from api-server-rest), shortened and printable."""
    text = body[: _MAX_ERROR_CHARS * 4].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else " " for c in text).strip()[:_MAX_ERROR_CHARS]
    return f": {text!r}" if text else ""


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise QuoteProviderError(f"coco: evidence '{what}' is not base64") from exc


def _parse_evidence(body: bytes, report_data: bytes) -> tuple[bytes, EventLog | None]:
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise QuoteProviderError("coco: evidence is not JSON") from exc
    if not isinstance(decoded, dict):
        raise QuoteProviderError("coco: evidence is not a JSON object")
    quote_b64 = decoded.get("quote")
    if not isinstance(quote_b64, str) or not quote_b64:
        if "svn" in decoded and "report_data" in decoded:
            raise QuoteProviderError(
                "coco: the agent returned sample-attester evidence (it found no TEE)"
            )
        raise QuoteProviderError("coco: evidence has no 'quote' (not TDX evidence)")
    quote = _b64(quote_b64, "quote")
    try:
        parsed = parse_quote(quote)
    except QuoteParseError as exc:
        raise QuoteProviderError(f"coco: evidence 'quote' is not a quote ({exc})") from exc
    if not parsed.is_tdx:
        raise QuoteProviderError("coco: evidence 'quote' is not a TDX quote")
    if not hmac.compare_digest(parsed.report_data, report_data):
        raise QuoteProviderError(
            f"coco: the agent's quote carries different report_data{_OLD_SERVER_HINT}"
        )
    raw_log = decoded.get("cc_eventlog")
    if raw_log in (None, ""):
        return quote, None
    if not isinstance(raw_log, str):
        raise QuoteProviderError("coco: evidence 'cc_eventlog' is not a string")
    try:
        event_log = parse_ccel(_b64(raw_log, "cc_eventlog"))
    except EvidenceError as exc:
        raise QuoteProviderError(f"coco: evidence CCEL is malformed ({exc})") from exc
    return quote, event_log
