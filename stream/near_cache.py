"""Values read from the online store, kept in the ranking worker for a short, bounded time.

Ranking a list reads, for its ~200 candidates, the model's item columns and, for the
user's recent items, their co-visitors; and the shop's most popular items. Consecutive
batches ask for mostly the same items (the popular ones fill every list), and reading and
decoding them again cost about a third of a list's CPU (``tools/bench_ranking.py``). A
:class:`NearCache` keeps what was read for ``max_age_s`` (``recommend.near_cache_ms``):
a list may then be ranked with item aggregates that far behind Redis. Items' rows reach
Redis through the repartition topic (stream/item_side.py) some milliseconds after their
event anyway; a user's own columns and seen items are never cached (stream/ranking.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class NearCache(Generic[K, V]):
    """Up to ``max_keys`` values, each usable for ``max_age_s`` after it was read
    (``now``: the caller's monotonic clock, s). ``max_age_s`` 0 keeps nothing.

    Entries too old to be used are dropped at most ``max_age_s`` after they expire (a
    sweep on ``store``), so the cache holds about what two windows read, not every item
    ever ranked: kept until ``max_keys`` filled, they grew the worker's memory with the
    number of items seen (the soak, tools/bench_soak.py)."""

    def __init__(self, max_age_s: float, max_keys: int = 50_000) -> None:
        if max_age_s < 0 or max_keys < 1:
            raise ValueError(f"max_age_s must be >= 0 and max_keys >= 1, got {max_age_s} and {max_keys}")
        self.max_age_s, self.max_keys = max_age_s, max_keys
        self._entries: dict[K, tuple[float, V]] = {}
        self._swept_at = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, keys: Iterable[K], now: float) -> tuple[dict[K, V], list[K]]:
        """The values of ``keys`` still fresh at ``now``, and the keys to read (missing or too old)."""
        hits: dict[K, V] = {}
        misses: list[K] = []
        oldest = now - self.max_age_s
        entries = self._entries
        for key in keys:
            entry = entries.get(key)
            if entry is not None and entry[0] > oldest:
                hits[key] = entry[1]
            else:
                misses.append(key)
        return hits, misses

    def store(self, keys: Sequence[K], values: Sequence[V], now: float) -> None:
        """Keep ``values`` (read at ``now``) for ``keys``. When full, entries too old to be
        used go first; if that frees too little, everything does (the hot keys come back
        on the next read)."""
        if not self.enabled:
            return
        entries = self._entries
        full = len(entries) + len(keys) > self.max_keys
        if full or now - self._swept_at >= self.max_age_s:
            oldest = now - self.max_age_s
            self._entries = entries = {k: e for k, e in entries.items() if e[0] > oldest}
            self._swept_at = now
            if len(entries) + len(keys) > self.max_keys:
                entries.clear()
        for key, value in zip(keys, values):
            entries[key] = (now, value)

    def clear(self) -> None:
        self._entries.clear()
