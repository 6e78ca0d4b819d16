"""The per-user cache of the last recommendation list, in Redis beside the features.

The worker writes each list it emits (``store_many``) and deletes a user's entry as
soon as a new event of theirs is accepted (``invalidate_many``), both in one
pipelined round trip per batch. Readers that need a user's list without an event
(a page load in a frontend, ``streamrec recommendations USER``) call ``get``: a hit
is the list for the user's latest known behaviour; a miss means an event is being
processed (or none was ever seen), so the caller falls back. Hits and misses are
counted for the hit rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

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

    async def store_many(self, recommendations: Sequence[Recommendation]) -> None:
        """Cache each user's newest list (later entries win), expiring after the TTL."""
        if not recommendations:
            return
        newest = {r.user_id: r for r in recommendations}
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, rec in newest.items():
                pipe.set(self.key(user_id), rec.to_bytes(), ex=self._ttl_s)
            await pipe.execute()

    async def invalidate_many(self, user_ids: Iterable[str]) -> None:
        keys = [self.key(u) for u in set(user_ids)]
        if keys:
            await self._client.delete(*keys)

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
