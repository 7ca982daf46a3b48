import pytest

from enclave.gateway import ReplayCache, ReplayCacheFullError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_seen_within_the_window_is_a_replay_and_expires_after_it():
    clock = Clock()
    cache = ReplayCache(60.0, 10, clock)
    assert cache.check_and_add(b"enc-1")
    assert not cache.check_and_add(b"enc-1")
    clock.now += 59.9
    assert not cache.check_and_add(b"enc-1")
    clock.now += 1.2  # the window and the edge second
    assert cache.check_and_add(b"enc-1")  # expired, accepted as new (its Date is stale by now)


def test_full_of_live_entries_it_fails_closed_and_recovers_as_they_expire():
    clock = Clock()
    cache = ReplayCache(60.0, 2, clock)
    assert cache.check_and_add(b"a")
    clock.now += 30
    assert cache.check_and_add(b"b")
    with pytest.raises(ReplayCacheFullError):
        cache.check_and_add(b"c")
    clock.now += 31  # "a" expired
    assert cache.check_and_add(b"c")
    assert len(cache) == 2
    assert not cache.check_and_add(b"b")


def test_a_future_dated_request_is_kept_until_its_date_can_no_longer_be_accepted():
    """Issue 12 point 3: a Date 0.9 W ahead stays acceptable for 1.9 W; the cache kept the enc
    for W only, so the request could be replayed after W."""
    clock = Clock()
    cache = ReplayCache(5.0, 10, clock)
    assert cache.check_and_add(b"enc-ahead", date_ahead=4.5)
    clock.now += 5.0 + 1.5  # W + 1.5 s: the Date (now + 4.5) is still within the window
    assert not cache.check_and_add(b"enc-ahead", date_ahead=4.5 - 6.5)
    clock.now += 4.5  # past Date + W (+ the edge second): it can no longer be accepted
    assert cache.check_and_add(b"enc-ahead")


def test_the_date_ahead_is_capped_at_the_window():
    clock = Clock()
    cache = ReplayCache(5.0, 10, clock)
    assert cache.check_and_add(b"far", date_ahead=1e9)
    clock.now += 11.1
    assert cache.check_and_add(b"far")
