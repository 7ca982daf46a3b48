"""The local proxy's front door: a pure-ASGI middleware around the whole proxy app (every
route, ``/proxy/health`` and unknown paths included) that keeps web pages out.

A plaintext proxy on loopback is reachable from any page a browser opens: a cross-site form
POSTs ``text/plain`` to it without a preflight, and DNS rebinding makes ``evil.example`` resolve
to 127.0.0.1 so that the page reads the answers too (CVE-2024-28224 against Ollama). In order:

1. **Host.** Only a ``Host`` that is a loopback IP (127.0.0.0/8, ``[::1]``), ``localhost``,
   a ``*.localhost`` name, or one of ``allowed_hosts`` (exact, case-insensitive, port ignored)
   is served; anything else is 403 ``host_not_allowed``. A rebinding page's requests carry its
   own name, so they stop here.
2. **Origin.** A request with an ``Origin`` header is served only when that origin is in
   ``allowed_origins`` (empty by default: browsers send ``Origin`` on every cross-site POST and
   on every CORS request, tools and SDKs send none); else 403 ``origin_not_allowed``. For an
   allowed origin the answer carries ``Access-Control-Allow-Origin`` and a preflight
   ``OPTIONS`` is answered 204.
3. **Token.** With ``token`` set (``ENCLAVE_PROXY_TOKEN``), every request needs it as
   ``Authorization: Bearer <token>`` or ``x-api-key: <token>`` (compared in constant time);
   else 401 ``proxy_token_required`` / ``proxy_token_invalid``. The header that carried it is
   removed before the request goes on (the token never leaves this machine).
4. **Content type.** A ``POST``, ``PUT`` or ``PATCH`` must be ``application/json``; else 415
   ``unsupported_media_type`` before its body is read (a cross-site ``text/plain`` or form
   POST cannot run even where the other checks were opened).

Refusals are in the shape of the route: Anthropic's ``{"type": "error", ...}`` on the Anthropic
routes, the service's OpenAI-shaped vocabulary everywhere else. Nothing of the request (the
Host, the Origin, a token) is echoed or logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from enclave.client._anthropic import error_document as anthropic_error_document
from enclave.client._anthropic import error_type_for_status
from enclave.protocol import api

__all__ = ["ProxyGuard", "host_allowed", "normalise_origin"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PREFLIGHT_HEADERS = b"authorization, x-api-key, content-type, anthropic-version, x-request-id"


def _host_name(host: str) -> str | None:
    """The name or address of a ``Host`` header value without its port, lower-cased; None if
    it cannot be one."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0 or (host[end + 1 :] and not host[end + 1 :].startswith(":")):
            return None
        return host[1:end]
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name


def _loopback(name: str) -> bool:
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header value names this loopback proxy (or an allowed name)."""
    if not host:
        return False
    name = _host_name(host)
    if not name:
        return False
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]  # the absolute form of the same name
    return name == "localhost" or name.endswith(".localhost") or _loopback(name) or name in allowed


def normalise_origin(origin: str) -> str:
    """An origin as compared: lower-cased, without a trailing slash."""
    return origin.strip().lower().rstrip("/")


class ProxyGuard:
    """See the module docstring. ``anthropic_paths`` says which paths answer in Anthropic's
    shape (a function of the path)."""

    def __init__(
        self,
        app: App,
        *,
        anthropic_paths: Callable[[str], bool],
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        token: str | None = None,
    ) -> None:
        self._app = app
        self._anthropic = anthropic_paths
        self._hosts = frozenset(
            name for host in allowed_hosts if (name := _host_name(host.rstrip(".")))
        )
        self._origins = frozenset(normalise_origin(origin) for origin in allowed_origins)
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":  # the proxy has no websocket routes
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        headers = _headers(scope)
        path = scope.get("path", "")
        if not self._host_ok(headers.get(b"host")):
            await self._refuse(send, path, "host_not_allowed")
            return
        origin = headers.get(b"origin")
        allowed_origin: bytes | None = None
        if origin is not None:
            if not self._origin_ok(origin):
                await self._refuse(send, path, "origin_not_allowed")
                return
            allowed_origin = origin
        method = scope.get("method", "GET").upper()
        if allowed_origin is not None and method == "OPTIONS":
            await self._preflight(send, allowed_origin)
            return
        if self._token is not None:
            code = self._authorise(scope, headers)
            if code is not None:
                await self._refuse(send, path, code, allowed_origin)
                return
        if method in _BODY_METHODS and not self._type_ok(headers.get(b"content-type")):
            await self._refuse(send, path, "unsupported_media_type", allowed_origin)
            return
        if allowed_origin is None:
            await self._app(scope, receive, send)
            return
        await self._app(scope, receive, _with_cors(send, allowed_origin))

    # Each check is a method of its own, so that tests can disable one and see its attack pass.
    def _host_ok(self, host: bytes | None) -> bool:
        return host is not None and host_allowed(host.decode("latin-1"), self._hosts)

    def _origin_ok(self, origin: bytes) -> bool:
        return normalise_origin(origin.decode("latin-1")) in self._origins

    @staticmethod
    def _type_ok(content_type: bytes | None) -> bool:
        return _json(content_type)

    def _required_token(self) -> bytes:
        if self._token is None:  # only called when a token is configured
            raise RuntimeError("the proxy guard has no token")
        return self._token

    def _token_ok(self, offered: bytes) -> bool:
        token = self._required_token()
        return hmac.compare_digest(offered, token)

    def _authorise(self, scope: Scope, headers: dict[bytes, bytes]) -> str | None:
        """None when a header carries the token (that header is then removed), else the code."""
        self._required_token()
        offered = False
        for name in (b"authorization", b"x-api-key"):
            value = headers.get(name)
            if value is None:
                continue
            offered = True
            if name == b"authorization":
                scheme, _, value = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    continue
            if self._token_ok(value.strip()):
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != name]
                return None
        return "proxy_token_invalid" if offered else "proxy_token_required"

    async def _refuse(self, send: Send, path: str, code: str, origin: bytes | None = None) -> None:
        error = api.ERRORS[code]
        if self._anthropic(path):
            document: object = anthropic_error_document(
                error_type_for_status(error.status), error.message
            )
        else:
            document = api.error_document(code)
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-confidential-verified", b"false"),
            (b"cache-control", b"no-store"),
        ]
        if code.startswith("proxy_token"):
            headers.append((b"www-authenticate", b'Bearer realm="enclave-proxy"'))
        if origin is not None:
            headers += _cors_headers(origin)
        logger.info("request refused at the proxy's door: %s", code)
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _preflight(send: Send, origin: bytes) -> None:
        headers = [
            *_cors_headers(origin),
            (b"access-control-allow-methods", b"GET, POST, PUT, PATCH, DELETE"),
            (b"access-control-allow-headers", _PREFLIGHT_HEADERS),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The first value of each header, names lower-cased."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        headers.setdefault(bytes(name).lower(), bytes(value))
    return headers


def _json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(b";")[0].strip().lower() == b"application/json"


def _cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-expose-headers", b"x-request-id, request-id, x-confidential-verified"),
        (b"vary", b"Origin"),
    ]


def _with_cors(send: Send, origin: bytes) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *_cors_headers(origin)]}
        await send(message)

    return wrapped
