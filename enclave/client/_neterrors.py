"""A connection failure told apart by its kind, for messages a user can act on: the name does
not resolve, nothing listens, the port does not speak TLS, the TLS handshake failed, it timed
out. Only the kind is described, never a foreign exception's text."""

from __future__ import annotations

import socket
import ssl

__all__ = ["describe_connection_error"]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_connection_error(exc: BaseException) -> str:
    """A short description of why a connection could not be made."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, socket.gaierror):
            return "the host name does not resolve (DNS)"
        if isinstance(item, ConnectionRefusedError):
            return "connection refused (nothing listens on that port)"
        if isinstance(item, ssl.SSLError):
            if "WRONG_VERSION_NUMBER" in str(item) or "record layer" in str(item):
                return "the port does not speak TLS (is it plain http?)"
            return "the TLS handshake failed"
        if isinstance(item, TimeoutError):
            return "timed out"
    text = " ".join(str(item) for item in chain).lower()  # httpcore words its errors
    if "name or service not known" in text or "nodename nor servname" in text:
        return "the host name does not resolve (DNS)"
    if "connection refused" in text or "connect call failed" in text:
        return "connection refused (nothing listens on that port)"
    if "wrong_version_number" in text or "wrong version number" in text:
        return "the port does not speak TLS (is it plain http?)"
    if "timed out" in text:
        return "timed out"
    return "the connection failed (" + type(exc).__name__ + ")"
