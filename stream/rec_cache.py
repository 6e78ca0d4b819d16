"""The per-user cache of the last recommendation list, kept in the online store.

After each batch the worker writes each list it emitted and drops the entry of
every other user with a newly accepted event, in one round trip (``update``); a
user's entry therefore never outlives their next processed event. Readers that need
a user's list without an event (a page load in a frontend, ``streamrec
recommendations USER``) call ``get``: a hit is the list for the user's latest known
behaviour; a miss means an event is being processed (or none was ever seen), so the
caller falls back. Hits and misses are counted for the hit rate.

Every write carries the user's version (the number of events applied to the user's
state, stream/user_side.py): the store keeps a list only if its version is at least
the newest it has seen for the user, and dropping an entry records its version
(features/list_cache.py). With split roles the features role drops entries while the
recommend role, in another process, writes lists; without versions a list ranked for
an older event and written after a newer event's drop would be served until the
user's next event (tests/stream/test_split_roles_cache.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamrec.features.config import FeatureConfig
from streamrec.features.list_cache import ListWrite, UserVersion
from streamrec.features.messages import Recommendation
from streamrec.features.online import OnlineFeatureStore, RedisFeatureStore

__all__ = ["RecommendationCache", "UserVersion"]


class RecommendationCache:
    """The list cache over an online store. ``owns_store``: :meth:`close` closes the store
    too (a cache built by :meth:`from_url`); a worker's cache shares the worker's store."""

    def __init__(self, store: OnlineFeatureStore, ttl_s: int, *, owns_store: bool = False) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._owns_store = owns_store
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_url(cls, url: str, project: str, ttl_s: int, *, reconnect_s: float = 0.0) -> RecommendationCache:
        """A cache with a store of its own; ``reconnect_s``: wait out a Redis restart that long."""
        store = RedisFeatureStore.from_url(url, FeatureConfig(project=project), reconnect_s=reconnect_s)
        return cls(store, ttl_s, owns_store=True)

    async def update(self, lists: Sequence[tuple[str, UserVersion, bytes]],
                     stale: Mapping[str, UserVersion] | None = None) -> None:
        """One round trip: cache each ``(user_id, version, serialized Recommendation)``
        (later entries win; expiring after the TTL) and drop the entries of the ``stale``
        users (user → version of their newest event) that got no new list here.

        Each write is applied only if its version is not older than the user's newest
        one in the cache, so the order in which processes' writes arrive does not matter.
        """
        newest = {user: (version, payload) for user, version, payload in lists}
        writes: list[ListWrite] = [(u, v, p) for u, (v, p) in newest.items()]
        writes += [(u, v, None) for u, v in (stale or {}).items() if u not in newest]
        await self._store.write_lists(writes, self._ttl_s)

    async def store_many(self, recommendations: Sequence[tuple[UserVersion, Recommendation]]) -> None:
        """Cache each user's list of ``version`` (later entries win), expiring after the TTL."""
        await self.update([(r.user_id, version, r.to_bytes()) for version, r in recommendations])

    async def invalidate_many(self, versions: Mapping[str, UserVersion]) -> None:
        """Drop the lists of these users older than the given versions."""
        await self.update([], versions)

    async def get(self, user_id: str) -> Recommendation | None:
        raw = await self._store.cached_list(user_id)
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return Recommendation.model_validate_json(raw)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    async def close(self) -> None:
        if self._owns_store:
            await self._store.close()
