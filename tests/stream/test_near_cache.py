"""NearCache: what it returns, for how long, and how it stays bounded."""

from __future__ import annotations

import pytest

from streamrec.stream.near_cache import NearCache


def test_a_value_is_returned_until_it_is_as_old_as_the_window() -> None:
    cache: NearCache[str, int] = NearCache(max_age_s=0.25)
    cache.store(["a", "b"], [1, 2], now=10.0)

    assert cache.lookup(["a", "c", "b"], now=10.2) == ({"a": 1, "b": 2}, ["c"])
    assert cache.lookup(["a", "b"], now=10.25) == ({}, ["a", "b"])


def test_a_value_read_again_is_kept_from_its_new_read() -> None:
    cache: NearCache[str, int] = NearCache(max_age_s=1.0)
    cache.store(["a"], [1], now=0.0)
    cache.store(["a"], [5], now=0.9)

    assert cache.lookup(["a"], now=1.5) == ({"a": 5}, [])


def test_a_zero_window_keeps_nothing() -> None:
    cache: NearCache[str, int] = NearCache(max_age_s=0.0)
    cache.store(["a"], [1], now=0.0)

    assert not cache.enabled and len(cache) == 0
    assert cache.lookup(["a"], now=0.0) == ({}, ["a"])


def test_when_full_the_stale_entries_go_first_then_everything() -> None:
    cache: NearCache[int, int] = NearCache(max_age_s=1.0, max_keys=4)
    cache.store([1, 2], [1, 2], now=0.0)
    cache.store([3, 4], [3, 4], now=0.8)
    cache.store([5], [5], now=1.5)  # 1 and 2 are too old by now: they make room

    assert len(cache) == 3 and cache.lookup([3, 4, 5], now=1.5) == ({3: 3, 4: 4, 5: 5}, [])
    cache.store([6, 7], [6, 7], now=1.6)  # nothing stale to drop: all go, the new ones stay

    assert len(cache) == 2 and cache.lookup([5, 6, 7], now=1.6) == ({6: 6, 7: 7}, [5])


@pytest.mark.parametrize(("age", "keys"), [(-1.0, 10), (1.0, 0)])
def test_a_bad_window_or_size_is_refused(age: float, keys: int) -> None:
    with pytest.raises(ValueError, match="max_age_s"):
        NearCache(max_age_s=age, max_keys=keys)


def test_stale_entries_go_within_a_window_of_expiring_though_the_cache_is_far_from_full() -> None:
    cache: NearCache[int, int] = NearCache(max_age_s=0.25, max_keys=50_000)
    cache.store(list(range(1000)), list(range(1000)), now=0.0)  # items of one batch
    cache.store([1000], [1000], now=0.1)  # within the window: nothing swept

    assert len(cache) == 1001
    cache.store([2000], [2000], now=0.3)  # a window after the last sweep: the first 1,000 have expired

    assert len(cache) == 2 and cache.lookup([1000, 2000, 5], now=0.3) == ({1000: 1000, 2000: 2000}, [5])
