"""The replay cache and its reference time (issue 12 point 3, issue 20 point 2): an ``enc`` is
forgotten only when its Date can no longer be accepted under any clock the host can set."""

import pytest

from enclave.gateway import ReplayCache, ReplayCacheFullError
from enclave.gateway._replay import Admission

FRESH, REPLAY, STALE = Admission.FRESH, Admission.REPLAY, Admission.STALE
T0 = 1_800_000_000.0  # a whole second, as an HTTP-date


class Clocks:
    """The host's wall clock and the monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.wall_now = T0
        self.monotonic_now = 1000.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.monotonic_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.monotonic_now += seconds


def cache(window: float, capacity: int = 10) -> tuple[ReplayCache, Clocks]:
    clocks = Clocks()
    return ReplayCache(window, capacity, clocks.wall, clocks.monotonic), clocks


def test_seen_within_the_window_is_a_replay_then_its_date_is_stale():
    replay, clocks = cache(60.0)
    assert replay.admit(b"enc-1", T0) is FRESH
    assert replay.admit(b"enc-1", T0) is REPLAY
    clocks.advance(59.9)
    assert replay.admit(b"enc-1", T0) is REPLAY
    clocks.advance(1.2)  # the window and the edge second: forgotten, and its Date is stale
    assert replay.admit(b"enc-1", T0) is STALE
    assert len(replay) == 0


def test_at_the_exact_edge_of_the_window_a_replay_is_still_known():
    """The Date check is inclusive: at reference == Date + window the request is acceptable, so
    its enc must still be there (``_EDGE_SECONDS``; 0 makes this replay FRESH)."""
    replay, clocks = cache(10.0)
    assert replay.admit(b"edge", T0) is FRESH
    clocks.advance(10.0)
    assert replay.admit(b"edge", T0) is REPLAY
    assert replay.admit(b"other", T0) is FRESH  # acceptable at the edge: inclusive


def test_a_missing_or_out_of_window_date_is_stale_and_not_remembered():
    replay, clocks = cache(10.0)
    assert replay.admit(b"none", None) is STALE
    assert replay.admit(b"past", T0 - 10.5) is STALE
    assert replay.admit(b"future", T0 + 10.5) is STALE
    assert len(replay) == 0
    clocks.advance(1.0)  # the future one is acceptable now; it never ran, so it runs once
    assert replay.admit(b"future", T0 + 10.5) is FRESH
    assert replay.admit(b"future", T0 + 10.5) is REPLAY


def test_full_of_live_entries_it_fails_closed_and_recovers_as_they_expire():
    replay, clocks = cache(60.0, capacity=2)
    assert replay.admit(b"a", T0) is FRESH
    clocks.advance(30)
    assert replay.admit(b"b", T0 + 30) is FRESH
    with pytest.raises(ReplayCacheFullError):
        replay.admit(b"c", T0 + 30)
    clocks.advance(31)  # "a" expired
    assert replay.admit(b"c", T0 + 61) is FRESH
    assert len(replay) == 2
    assert replay.admit(b"b", T0 + 30) is REPLAY


def test_a_future_dated_request_is_kept_until_its_date_can_no_longer_be_accepted():
    """Issue 12 point 3: a Date 0.9 W ahead stays acceptable for 1.9 W."""
    replay, clocks = cache(5.0)
    assert replay.admit(b"enc-ahead", T0 + 4.5) is FRESH
    clocks.advance(5.0 + 1.5)
    assert replay.admit(b"enc-ahead", T0 + 4.5) is REPLAY
    clocks.advance(4.5)
    assert replay.admit(b"enc-ahead", T0 + 4.5) is STALE


@pytest.mark.parametrize("window", [10.0, 60.0])
@pytest.mark.parametrize("delay", [26.8, 42.1, 126.8])
def test_stepping_the_wall_clock_back_does_not_reopen_a_replay(window: float, delay: float):
    """Issue 20 point 2: accepted at T0, replayed ``delay`` seconds later after the host stepped
    the wall clock back to T0, where the Date looks fresh again. Refused: the reference time
    advanced with the monotonic clock."""
    replay, clocks = cache(window)
    assert replay.admit(b"unload", T0) is FRESH
    clocks.advance(delay)
    clocks.wall_now = T0
    assert replay.admit(b"unload", T0) in (REPLAY, STALE)
    assert replay.reference() == pytest.approx(T0 + delay)


@pytest.mark.parametrize("window", [10.0, 60.0])
@pytest.mark.parametrize("delay", [26.8, 42.1, 126.8])
def test_a_stepped_back_wall_clock_is_refused_even_with_a_stopped_monotonic_clock(
    window: float, delay: float
):
    """The host moves the wall clock ahead (the entry expires: a request was seen there) and
    then back, with the monotonic clock standing still: the largest wall time seen holds."""
    replay, clocks = cache(window)
    assert replay.admit(b"unload", T0) is FRESH
    clocks.wall_now = T0 + delay
    assert replay.admit(b"other", T0 + delay) is FRESH
    assert len(replay) == (1 if delay > window + 1 else 2)  # "unload" gone once past its life
    clocks.wall_now = T0
    assert replay.admit(b"unload", T0) in (REPLAY, STALE)


def test_without_any_clock_moving_the_entry_stays():
    replay, clocks = cache(10.0)
    assert replay.admit(b"frozen", T0) is FRESH
    clocks.wall_now = T0 - 3600  # back, with nothing seen ahead: the reference stays at T0
    assert replay.admit(b"frozen", T0) is REPLAY
    assert replay.reference() == T0


def test_a_stepped_back_clock_still_serves_clients_with_the_right_time():
    """A clock stepped back does not lock out clients: the Date is read against the reference
    time, which the date problem reports."""
    replay, clocks = cache(10.0)
    assert replay.admit(b"a", T0) is FRESH
    clocks.advance(100.0)
    clocks.wall_now = T0
    assert replay.admit(b"b", T0 + 100.0) is FRESH


def test_the_reference_never_goes_back():
    replay, clocks = cache(10.0)
    seen = [replay.reference()]
    for wall, monotonic in [(5, 1), (-50, 1), (3, -20), (-1000, 2), (2000, 0), (-2000, 0)]:
        clocks.wall_now += wall
        clocks.monotonic_now += monotonic
        seen.append(replay.reference())
    assert seen == sorted(seen)


def test_the_edge_second_is_what_keeps_the_edge_replay(monkeypatch: pytest.MonkeyPatch):
    """The mutation of issue 20: ``_EDGE_SECONDS`` 1.0 -> 0 reopens the replay at the edge."""
    from enclave.gateway import _replay

    monkeypatch.setattr(_replay, "_EDGE_SECONDS", 0.0)
    replay, clocks = cache(10.0)
    assert replay.admit(b"edge", T0) is FRESH
    clocks.advance(10.0)
    assert replay.admit(b"edge", T0) is FRESH  # what test_at_the_exact_edge_... refuses
