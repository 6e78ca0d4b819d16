"""At-least-once redelivery and client re-sends through the real broker and worker
leave identical features.

5,000 real MovieLens ratings go through a worker process, and the online store must
equal ``verify``'s recomputation from ``clickstream``. Then:

1. broker redelivery: the worker stops, its consumer group's offsets on
   ``clickstream`` are rewound to the start, and a new worker (state restored from
   the changelogs) consumes every record again: each is recognised by its offset;
2. client re-sends: the very same 5,000 events (same ids, same times) are produced
   again as new records: each is recognised by its id. The id window holds an
   entity's last ``dedup_max_ids`` events; the test sets it above any user's count.

After each, every user, item and global feature row, every row timestamp and the
Redis indexes must be unchanged.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import GLOBAL_VIEW, ITEM_VIEW, USER_VIEW
from streamrec.features.verify import verify
from streamrec.models.datasets import load_movielens
from streamrec.tools.harness import isolated_settings, produce, start_worker, stop_worker, wait_ready

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


def _sentinels(tag: str, n: int = 40) -> list[ClickEvent]:
    now = datetime.now(timezone.utc)
    return [ClickEvent(event_id=f"sentinel-{tag}-{k}", user_id=f"sentinel-user-{tag}-{k}",
                       item_id=f"sentinel-item-{tag}-{k}", type=EventType.VIEW, ts=now) for k in range(n)]


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
    from streamrec.features.online import ReadRequest

    return ReadRequest(view, ids)


async def _rewind(settings: Any) -> None:
    """Commit offset 0 on every ``clickstream`` partition for the worker's (empty) group."""
    from aiokafka import TopicPartition

    from streamrec.infra.kafka_clients import consumer

    client = consumer(settings.broker, group_id=settings.worker.app_id)
    await client.start()
    try:
        parts = [TopicPartition(settings.topics.clickstream, p) for p in range(PARTITIONS)]
        client.assign(parts)
        await client.commit({tp: 0 for tp in parts})
    finally:
        await client.stop()


async def _sentinels_seen(settings: Any, store: RedisFeatureStore, worker: Worker, tag: str) -> None:
    """Send one event per fresh user behind everything sent so far, on every partition,
    and wait until each is applied: the worker has consumed all that came before."""
    sentinels = _sentinels(tag)
    await produce(settings, sentinels)

    async def seen() -> bool:
        rows = await store.read_batch(ITEM_VIEW, [s.item_id for s in sentinels], ["event_count"])  # type: ignore[misc]
        return all(r["event_count"] == 1 for r in rows)

    await _wait_for(seen, worker)


async def test_redelivered_records_and_resent_events_leave_identical_features(
    bootstrap_servers: str, redis_url: str, tmp_path: Path
) -> None:
    base = redis_url.rpartition("/")[0]
    settings = isolated_settings(bootstrap_servers, f"{base}/{REDELIVERY_DB}", tmp_path,
                                 broker={"partitions": PARTITIONS}, features={"dedup_max_ids": 1000})
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    events = _events()
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events})  # type: ignore[type-var]
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        await wait_ready(settings, store, worker.process, worker.log, timeout_s=400)
        await produce(settings, events)
        await _sentinels_seen(settings, store, worker, "first")
        first = await _snapshot(store, users, items)
        checked = await verify(settings)

        stop_worker(worker.process)  # commits its offsets and leaves the group
        await _rewind(settings)
        worker = Worker(settings, tmp_path / "worker-again.log")
        await wait_ready(settings, store, worker.process, worker.log, timeout_s=400)
        await _sentinels_seen(settings, store, worker, "redelivered")
        redelivered = await _snapshot(store, users, items)

        await produce(settings, events)  # client re-sends: same ids, same event times, new records
        await _sentinels_seen(settings, store, worker, "resent")
        resent = await _snapshot(store, users, items)
        rechecked = await verify(settings)
    finally:
        stop_worker(worker.process)
        await store.close()

    assert checked.ok, checked.mismatches
    assert checked.events_applied >= N_EVENTS and checked.users >= len(users)
    assert sum(r["n_rating"] for r in first["global"]) == N_EVENTS  # type: ignore[misc]
    assert rechecked.ok, rechecked.mismatches
    assert rechecked.repeated >= N_EVENTS  # the re-sent events (and a repeated readiness probe)
    for second in (redelivered, resent):
        for key in ("users", "items", "user_ts", "item_ts", "top_mean", "seen"):
            assert second[key] == first[key], key
        # the readiness probe's item gets more probe views between the snapshots
        real = [i for i in first["top_popular"] if not i.startswith("sentinel") and i != "probe"]
        assert [i for i in second["top_popular"] if not i.startswith("sentinel") and i != "probe"] == real
        for before, after in zip(first["global"], second["global"]):
            assert (after["n_rating"], after["rating_mean"]) == (before["n_rating"], before["rating_mean"])
