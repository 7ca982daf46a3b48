"""``HOST:PORT`` listen addresses of the local daemons (proxy, relay): parsed strictly (a port
outside 1..65535 is refused, never wrapped), and whether the host is loopback."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "parse_listen"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def parse_listen(text: str) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT`` (``[::1]:PORT`` for IPv6); ``ValueError`` with the
    reason otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"the listen address must be HOST:PORT, not {text!r}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is outside 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, number


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
