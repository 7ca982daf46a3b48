"""Who a peer address counts as: IPv4 by its address (also when IPv4-mapped), IPv6 by a prefix.

One IPv6 subscriber usually holds a whole /64 (often a /56 or /48), so per-address limits
keyed on the full 128 bits give one subscriber as many budgets as it has addresses. Limits
therefore key IPv6 peers by their /64, and the connection table also by their /56.
"""

from __future__ import annotations

import ipaddress

__all__ = ["address_prefix"]


def address_prefix(host: str, v6_bits: int = 64) -> str:
    """``host`` as the key it is counted under: an IPv4 address as is, an IPv4-mapped IPv6
    address as its IPv4 address, another IPv6 address as its ``/v6_bits`` network (zone index
    dropped); anything that is not an IP address (a Unix socket path) unchanged."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, v6_bits), strict=False))
    return str(address)
