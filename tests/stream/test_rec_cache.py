"""The recommendation cache against a real redis-server (the test stack's)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from streamrec.features.messages import Recommendation, RecommendedItem, StageLatency
from streamrec.features.redis_conn import redis_client
from streamrec.stream.rec_cache import RecommendationCache

pytestmark = pytest.mark.integration


def recommendation(user: str, cause: str) -> Recommendation:
    now = datetime.now(timezone.utc)
    return Recommendation(user_id=user, items=[RecommendedItem(item_id="i1", score=1.0, source="popular")], model_version="v",
                          cause_event_id=cause, event_ts=now, emitted_at=now, worker_id="w",
                          latency_ms=StageLatency(candidates=0.0, features=0.0, scoring=0.0, total=0.0))


async def raw(redis_url: str, *command: str) -> Any:
    """One command on a client of its own: what the cache's interface does not show."""
    client = redis_client(redis_url)
    try:
        return await client.execute_command(*command)
    finally:
        await client.aclose()


async def test_update_stores_new_lists_and_drops_only_stale_users_without_one(redis_url: str) -> None:
    project = f"cache_{uuid.uuid4().hex[:8]}"
    cache = RecommendationCache.from_url(redis_url, project, ttl_s=60)
    try:
        await cache.store_many([(1, recommendation("a", "e0")), (1, recommendation("b", "e0")), (1, recommendation("c", "e0"))])
        assert 0 < await raw(redis_url, "TTL", f"{project}:rec:c") <= 60
        await cache.update([("a", 2, recommendation("a", "e1").to_bytes()), ("a", 2, recommendation("a", "e2").to_bytes())],
                           stale={"a": 2, "b": 2})
        a, b, c = [await cache.get(u) for u in "abc"]
        assert a is not None and a.cause_event_id == "e2"  # the newest list wins; being stale does not drop it
        assert b is None  # stale, no new list
        assert c is not None and c.cause_event_id == "e0"  # untouched
        assert cache.hits == 2 and cache.misses == 1
        await cache.invalidate_many({"a": 3, "c": 2})
        assert await cache.get("a") is None and await cache.get("c") is None
    finally:
        await cache.close()


async def test_writes_older_than_the_users_newest_version_change_nothing(redis_url: str) -> None:
    cache = RecommendationCache.from_url(redis_url, f"cache_{uuid.uuid4().hex[:8]}", ttl_s=60)
    try:
        await cache.invalidate_many({"a": 5})
        await cache.store_many([(4, recommendation("a", "e4"))])  # ranked before event 5: refused
        assert await cache.get("a") is None
        await cache.store_many([(5, recommendation("a", "e5"))])
        await cache.invalidate_many({"a": 5})  # a drop of the list's own version keeps it
        await cache.invalidate_many({"a": 4})
        cached = await cache.get("a")
        assert cached is not None and cached.cause_event_id == "e5"
        await raw(redis_url, "SCRIPT", "FLUSH")  # as after a Redis restart: the script is loaded again
        await cache.store_many([(6, recommendation("a", "e6"))])
        cached = await cache.get("a")
        assert cached is not None and cached.cause_event_id == "e6"
    finally:
        await cache.close()
