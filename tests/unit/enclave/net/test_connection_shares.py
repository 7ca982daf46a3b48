"""Issue 20 point 5: one subscriber cannot take the whole connection limit (IPv6 counted per
/64 and per /56, the last places for peers holding few), and max_connections fits the
process's descriptor limit."""

from __future__ import annotations

import logging
import resource

import pytest

from enclave.net import ConnectionLimits, ConnectionTable
from enclave.net._connections import FD_RESERVE, fit_to_descriptor_limit

DEFAULTS = ConnectionLimits()  # 2048 overall, 256 per /64, 512 per /56, 256 kept for light


def _fill(table: ConnectionTable, hosts: list[str], each: int) -> int:
    return sum(table.admit(host) is None for host in hosts for _ in range(each))


def _legitimate(table: ConnectionTable, tries: int = 32) -> int:
    """A client opening one connection at a time, closing each: how many were admitted."""
    admitted = 0
    for _ in range(tries):
        if table.admit("198.51.100.7") is None:
            admitted += 1
            table.release("198.51.100.7")
    return admitted


def test_eight_addresses_of_one_61_hold_at_most_the_56_share():
    """8 /64s of one /61 held all 2048 connections and a client was refused 31 of 32 times."""
    table = ConnectionTable(DEFAULTS)
    subscriber = [f"2001:db8:0:{8 + n:x}::{k:x}" for n in range(8) for k in range(1, 3)]
    assert _fill(table, subscriber, 256) == 512
    assert table.from_prefix("2001:db8:0:8::1") == 512
    assert table.admit("2001:db8:0:f::77") == "max_connections_per_prefix"  # a /64 holding none
    assert _legitimate(table) == 32


def test_without_the_prefix_count_the_same_subscriber_took_everything():
    """The figure before the change: per /64 only, no places kept."""
    table = ConnectionTable(ConnectionLimits(max_per_prefix=2048, reserved_for_light_peers=0))
    subscriber = [f"2001:db8:0:{8 + n:x}::1" for n in range(8)]
    assert _fill(table, subscriber, 256) == 2048
    assert _legitimate(table) == 0


def test_the_last_places_are_kept_for_peers_holding_few():
    table = ConnectionTable(DEFAULTS)
    heavy = [f"2001:db8:{n:x}::1" for n in range(1, 8)]  # 7 /56s, 256 each
    assert _fill(table, heavy, 256) == 1792
    assert table.admit("2001:db8:99::1") is None  # a new /56 still gets in
    assert table.admit("192.0.2.1") is None
    assert _fill(table, ["2001:db8:99::1"], 20) == 7  # up to 8 from it, no more
    assert table.admit("2001:db8:99::1") == "max_connections_reserved"
    assert table.admit("2001:db8:1:1::1") == "max_connections_reserved"  # a heavy /56: refused
    lights = [f"203.0.113.{n}" for n in range(1, 200)]
    assert _fill(table, lights, 8) == 2048 - 1792 - 8 - 1
    assert table.admit("203.0.113.250") == "max_connections"
    table.release("2001:db8:1::1")
    assert table.admit("2001:db8:1::1") == "max_connections_reserved"
    assert table.admit("203.0.113.251") is None


def test_ipv4_peers_are_not_grouped():
    table = ConnectionTable(ConnectionLimits(max_per_address=4, max_per_prefix=2))
    assert _fill(table, ["192.0.2.1"], 10) == 4  # the /56 limit is for IPv6 alone
    assert _fill(table, ["192.0.2.2"], 10) == 4


def test_limits_are_checked():
    with pytest.raises(ValueError, match="reserved for light peers"):
        ConnectionLimits(max_connections=10, reserved_for_light_peers=10)
    with pytest.raises(ValueError, match="must be positive"):
        ConnectionLimits(max_per_prefix=0)


class Limits:
    def __init__(self, soft: int, hard: int, raisable: bool = True) -> None:
        self.soft, self.hard, self.raisable = soft, hard, raisable

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, value: tuple[int, int]) -> None:
        if not self.raisable:
            raise ValueError("not allowed")
        self.soft, self.hard = value


def test_the_soft_descriptor_limit_is_raised_when_the_hard_one_allows():
    limits = Limits(1024, 1 << 20)
    fitted = fit_to_descriptor_limit(DEFAULTS, getrlimit=limits.get, setrlimit=limits.set)
    assert fitted == DEFAULTS
    assert limits.soft == 2048 + FD_RESERVE


def test_max_connections_is_lowered_to_fit_with_a_warning(caplog: pytest.LogCaptureFixture):
    """Past the limit, accept failed with EMFILE."""
    limits = Limits(1024, 1024, raisable=False)
    with caplog.at_level(logging.WARNING):
        fitted = fit_to_descriptor_limit(DEFAULTS, getrlimit=limits.get, setrlimit=limits.set)
    assert fitted.max_connections == 1024 - FD_RESERVE
    assert fitted.max_per_address == 256
    assert fitted.max_per_prefix == 512
    assert fitted.reserved_for_light_peers == (1024 - FD_RESERVE) // 8
    assert "max_connections 2048 lowered to 768" in caplog.text
    assert "RLIMIT_NOFILE" in caplog.text


def test_a_hard_limit_below_the_need_is_used_as_far_as_it_goes():
    limits = Limits(512, 1500)
    fitted = fit_to_descriptor_limit(DEFAULTS, getrlimit=limits.get, setrlimit=limits.set)
    assert limits.soft == 1500
    assert fitted.max_connections == 1500 - FD_RESERVE


def test_too_few_descriptors_to_serve_refuses_to_start():
    limits = Limits(200, 200, raisable=False)
    with pytest.raises(ValueError, match="RLIMIT_NOFILE"):
        fit_to_descriptor_limit(DEFAULTS, getrlimit=limits.get, setrlimit=limits.set)


def test_an_unlimited_descriptor_limit_changes_nothing():
    infinity = resource.RLIM_INFINITY
    limits = Limits(infinity, infinity)
    assert fit_to_descriptor_limit(DEFAULTS, getrlimit=limits.get, setrlimit=limits.set) == DEFAULTS
