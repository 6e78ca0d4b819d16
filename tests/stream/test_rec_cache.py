"""The recommendation cache against a real redis-server (the test stack's)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from stream.rec_cache import RecommendationCache
from stream.schemas import Recommendation, RecommendedItem, StageLatency

pytestmark = pytest.mark.integration


def recommendation(user: str, cause: str) -> Recommendation:
    now = datetime.now(timezone.utc)
    return Recommendation(user_id=user, items=[RecommendedItem(item_id="i1", score=1.0, source="popular")], model_version="v",
                          cause_event_id=cause, event_ts=now, emitted_at=now, worker_id="w",
                          latency_ms=StageLatency(candidates=0.0, features=0.0, scoring=0.0, total=0.0))


async def test_update_stores_new_lists_and_drops_only_stale_users_without_one(redis_url: str) -> None:
    cache = RecommendationCache.from_url(redis_url, f"cache_{uuid.uuid4().hex[:8]}", ttl_s=60)
    try:
        await cache.store_many([recommendation("a", "e0"), recommendation("b", "e0"), recommendation("c", "e0")])
        assert 0 < await cache._client.ttl(cache.key("c")) <= 60
        await cache.update([("a", recommendation("a", "e1").to_bytes()), ("a", recommendation("a", "e2").to_bytes())],
                           stale=["a", "b"])
        a, b, c = [await cache.get(u) for u in "abc"]
        assert a is not None and a.cause_event_id == "e2"  # the newest list wins; being stale does not drop it
        assert b is None  # stale, no new list
        assert c is not None and c.cause_event_id == "e0"  # untouched
        assert cache.hits == 2 and cache.misses == 1
        await cache.invalidate_many(["a", "c"])
        assert await cache.get("a") is None and await cache.get("c") is None
    finally:
        await cache.close()
