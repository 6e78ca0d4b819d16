"""The per-user cache of the last recommendation list, in Redis beside the features.

After each batch the worker writes each list it emitted and deletes the entry of
every other user with a newly accepted event, in one pipelined round trip
(``update``); a user's entry therefore never outlives their next processed event.
Readers that need a user's list without an event (a page load in a frontend,
``streamrec recommendations USER``) call ``get``: a hit
is the list for the user's latest known behaviour; a miss means an event is being
processed (or none was ever seen), so the caller falls back. Hits and misses are
counted for the hit rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from features import resp
from stream.schemas import Recommendation


class RecommendationCache:
    def __init__(self, client: aioredis.Redis, project: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = f"{project}:rec:"
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_url(cls, url: str, project: str, ttl_s: int) -> RecommendationCache:
        return cls(aioredis.Redis.from_url(url, decode_responses=False), project, ttl_s)

    def key(self, user_id: str) -> str:
        return self._prefix + user_id

    async def update(self, lists: Sequence[tuple[str, bytes]], stale: Iterable[str] = ()) -> None:
        """One round trip: cache each ``(user_id, serialized Recommendation)`` (later
        entries win; expiring after the TTL) and delete the entries of the ``stale``
        users that got no new list."""
        newest = dict(lists)
        ttl = b"%d" % self._ttl_s
        commands = [resp.command(b"SET", self.key(u).encode(), payload, b"EX", ttl) for u, payload in newest.items()]
        gone = [self.key(u).encode() for u in set(stale) if u not in newest]
        if gone:
            commands.append(resp.command(b"DEL", *gone))
        await resp.round_trip(self._client, commands)

    async def store_many(self, recommendations: Sequence[Recommendation]) -> None:
        """Cache each user's newest list (later entries win), expiring after the TTL."""
        await self.update([(r.user_id, r.to_bytes()) for r in recommendations])

    async def invalidate_many(self, user_ids: Iterable[str]) -> None:
        await self.update([], user_ids)

    async def get(self, user_id: str) -> Recommendation | None:
        raw = await self._client.get(self.key(user_id))
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
        await self._client.aclose()
