"""uvicorn-style access lines without query strings (a query could carry request data).

``INFO:     127.0.0.1:50612 - "POST /v1/chat/completions HTTP/1.1" 200 OK``; the client
part is empty over a Unix socket, as in uvicorn.
"""

from __future__ import annotations

import http
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enclave_dev.engine._logs import ACCESS_LOGGER_NAME

__all__ = ["AccessLog"]

logger = logging.getLogger(ACCESS_LOGGER_NAME)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class AccessLog:
    """ASGI middleware logging one line per HTTP response, when it starts."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else ""
        line = f"{scope['method']} {scope['path']} HTTP/{scope.get('http_version', '1.1')}"

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                logger.info('%s - "%s" %d %s', peer, line, status, _phrase(status))
            await send(message)

        await self._app(scope, receive, logged_send)
