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
    clock.now += 0.2
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
