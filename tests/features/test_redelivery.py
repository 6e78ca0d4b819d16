"""At-least-once redelivery through the real broker and worker leaves identical features.

5,000 real MovieLens ratings go through a worker process; then the very same 5,000
events (same ids, same times) are produced again. Every user, item and global
feature row, every row timestamp and the Redis indexes must be unchanged, and the
first pass must equal a direct recomputation from the events.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from features.harness import isolated_settings, produce, start_worker, stop_worker, wait_ready
from features.online import RedisFeatureStore
from features.schema import GLOBAL_VIEW, ITEM_VIEW, USER_VIEW
from models.datasets import load_movielens
from stream.schemas import ClickEvent, EventType

# The worker applies the Feast repo in a child process at start (tens of seconds when
# the shared 2 cores are busy): allow more than the default per-test timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

N_EVENTS = 5000
PARTITIONS = 2
REDELIVERY_DB = 8


def _events() -> list[ClickEvent]:
    frame = load_movielens().interactions.iloc[:N_EVENTS]
    start = datetime.now(timezone.utc)
    return [
        ClickEvent(event_id=f"ml-{n}", user_id=str(r.user_id), item_id=str(r.item_id), type=EventType.RATING,
                   rating=float(r.rating), ts=start + timedelta(milliseconds=n))
        for n, r in enumerate(frame.itertuples(index=False))
    ]


def _sentinels(n: int = 40) -> list[ClickEvent]:
    now = datetime.now(timezone.utc)
    return [ClickEvent(event_id=f"sentinel-{k}", user_id=f"sentinel-user-{k}", item_id=f"sentinel-item-{k}",
                       type=EventType.VIEW, ts=now) for k in range(n)]


async def _wait_for(condition: Any, worker: Any, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if worker.process.poll() is not None:
            raise AssertionError(f"worker died:\n{worker.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out:\n{worker.log.read_text()[-3000:]}")
        await asyncio.sleep(0.2)


class Worker:
    def __init__(self, settings: Any, log: Path) -> None:
        self.settings, self.log = settings, log
        self.process = start_worker(settings, log)


async def _snapshot(store: RedisFeatureStore, users: list[str], items: list[str]) -> dict[str, Any]:
    shards = [f"p{p}" for p in range(PARTITIONS)]
    user_rows, item_rows, global_rows = await store.read_many(
        [_req(USER_VIEW, users), _req(ITEM_VIEW, items), _req(GLOBAL_VIEW, shards)]
    )
    return {
        "users": user_rows,
        "items": item_rows,
        "global": global_rows,
        "user_ts": await store.read_row_timestamps(USER_VIEW, users),
        "item_ts": await store.read_row_timestamps(ITEM_VIEW, items),
        "top_mean": await store.top_items_by_mean(10_000),
        "top_popular": await store.top_items_by_popularity(10_000),
        "seen": [await store.seen_items(u) for u in users[:50]],
    }


def _req(view: str, ids: list[str]) -> Any:
    from features.online import ReadRequest

    return ReadRequest(view, ids)


async def test_replaying_the_same_events_leaves_identical_features(
    bootstrap_servers: str, redis_url: str, tmp_path: Path
) -> None:
    base = redis_url.rpartition("/")[0]
    settings = isolated_settings(bootstrap_servers, f"{base}/{REDELIVERY_DB}", tmp_path,
                                 broker={"partitions": PARTITIONS})
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    events = _events()
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events})  # type: ignore[type-var]
    ratings: dict[str, list[float]] = defaultdict(list)
    by_item: dict[str, list[float]] = defaultdict(list)
    for e in events:
        ratings[e.user_id].append(e.rating)  # type: ignore[arg-type]
        by_item[e.item_id].append(e.rating)  # type: ignore[index, arg-type]
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        await wait_ready(settings, store, worker.process, worker.log, timeout_s=400)

        async def all_applied() -> bool:
            rows = await store.read_batch(ITEM_VIEW, items, ["n_rating"])
            return all(r["n_rating"] == len(by_item[i]) for i, r in zip(items, rows))

        await produce(settings, events)
        await _wait_for(all_applied, worker)
        first = await _snapshot(store, users, items)

        await produce(settings, events)  # redelivery: same ids, same event times
        sentinels = _sentinels()
        await produce(settings, sentinels)  # behind the replay on every partition

        async def sentinels_seen() -> bool:
            rows = await store.read_batch(ITEM_VIEW, [s.item_id for s in sentinels], ["event_count"])  # type: ignore[misc]
            return all(r["event_count"] == 1 for r in rows)

        await _wait_for(sentinels_seen, worker)
        second = await _snapshot(store, users, items)
    finally:
        stop_worker(worker.process)
        await store.close()

    for user, row in zip(users, first["users"]):
        assert row["n_rating"] == len(ratings[user])
        assert row["rating_mean"] == pytest.approx(sum(ratings[user]) / len(ratings[user]), rel=1e-9)
    for item, row in zip(items, first["items"]):
        assert row["rating_mean"] == pytest.approx(sum(by_item[item]) / len(by_item[item]), rel=1e-9)
    assert sum(r["n_rating"] for r in first["global"]) == N_EVENTS  # type: ignore[misc]

    for key in ("users", "items", "user_ts", "item_ts", "top_mean", "seen"):
        assert second[key] == first[key], key
    # the readiness probe's item may get one more probe view between the snapshots
    real = [i for i in first["top_popular"] if i != "probe"]
    assert [i for i in second["top_popular"] if not i.startswith("sentinel") and i != "probe"] == real
    for before, after in zip(first["global"], second["global"]):
        assert (after["n_rating"], after["rating_mean"]) == (before["n_rating"], before["rating_mean"])
