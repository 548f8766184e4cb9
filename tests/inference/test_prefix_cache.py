"""The host-memory prefix cache on its own: budget, least recently used out, covered prefixes
kept once, one model's entries apart from another's."""

from __future__ import annotations

from inference.prefix_cache import PrefixCache, common_prefix


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_the_best_entry_shares_the_most_leading_tokens() -> None:
    cache = PrefixCache(1000)
    cache.add("m", [1, 2, 3, 4], b"a" * 10)
    cache.add("m", [1, 9], b"b" * 10)
    entry, shared = cache.best("m", [1, 2, 3, 7])
    assert entry is not None and entry.state == b"a" * 10 and shared == 3
    assert cache.best("m", [5]) == (None, 0)
    assert cache.best("other model", [1, 2, 3]) == (None, 0)


def test_a_longer_prefix_replaces_the_shorter_ones_it_covers() -> None:
    cache = PrefixCache(1000)
    cache.add("m", [1, 2], b"x" * 10)
    cache.add("m", [1, 2, 3], b"y" * 20)
    assert cache.stats().entries == 1 and cache.stats().bytes == 20
    assert cache.covers("m", [1, 2]) and cache.covers("m", [1, 2, 3])
    assert not cache.covers("m", [1, 2, 3, 4]) and not cache.covers("n", [1, 2])


def test_the_least_recently_used_go_first_when_the_budget_is_full() -> None:
    cache = PrefixCache(100)
    cache.add("m", [1], b"a" * 40)
    cache.add("m", [2], b"b" * 40)
    old, _ = cache.best("m", [1])
    assert old is not None
    cache.used(old)  # [1] is now the most recently used
    cache.add("m", [3], b"c" * 40)
    assert cache.best("m", [2]) == (None, 0)
    assert cache.best("m", [1])[1] == 1 and cache.best("m", [3])[1] == 1
    stats = cache.stats()
    assert stats.evicted == 1 and stats.bytes == 80 and stats.restored == 1


def test_what_does_not_fit_the_budget_is_not_kept() -> None:
    cache = PrefixCache(10)
    assert not cache.add("m", [1], b"z" * 11)
    assert not PrefixCache(0).add("m", [1], b"z")
    assert cache.stats().entries == 0


def test_clear_forgets_one_model() -> None:
    cache = PrefixCache(100)
    cache.add("m", [1], b"a")
    cache.add("n", [1], b"b")
    cache.clear("m")
    assert cache.best("m", [1]) == (None, 0) and cache.best("n", [1])[1] == 1
