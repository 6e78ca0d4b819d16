"""Exactly-once on the embedded Kafka: a worker SIGKILLed mid-stream and restarted.

With ``processing_guarantee=exactly_once`` every state change, repartition message
and recommendation goes out in the transaction that commits its input offsets. A
worker killed with SIGKILL leaves an open transaction; its successor fences it (the
broker aborts it) and resumes from the committed offsets. Afterwards every user's and
item's features must equal a recomputation from the events sent, and a
``read_committed`` reader must see each event answered (as cause or cover) exactly once.
It failed (1-30 events never applied) until the drain loop's delivery race was closed
(``_FlowSuspension`` in stream/transport.py).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import ITEM_VIEW, USER_VIEW
from streamrec.infra.kafka_clients import consumer
from streamrec.models.datasets import load_movielens
from streamrec.tools.harness import isolated_settings, start_worker, stop_worker, wait_ready
from tests.stream.faults import paced_produce

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

N_EVENTS = 6000
SEND_RATE = 1500.0  # events/s: 4 s of sending, the kill at a third applied lands before its end
PARTITIONS = 2
EOS_DB = 9


def _events() -> list[ClickEvent]:
    frame = load_movielens().interactions.iloc[:N_EVENTS]
    start = datetime.now(timezone.utc)
    return [
        ClickEvent(event_id=f"eos-{n}", user_id=str(r.user_id), item_id=str(r.item_id), type=EventType.RATING,
                   rating=float(r.rating), ts=start + timedelta(milliseconds=n))
        for n, r in enumerate(frame.itertuples(index=False))
    ]


async def _wait_for(applied: Any, target: int, process: Any, log: Path, settings: Any, stall_s: float = 120,
                    details: Any = None) -> None:
    """Wait until ``applied()`` reaches ``target``; fail only when it stops moving for
    ``stall_s`` (a slow start under load is not a failure), saying whether the worker's
    group still had records to read (stuck) or had read everything (effects lost)."""
    from streamrec.tools.bench_e2e import group_lag

    last, moved = -1, time.monotonic()
    while (count := await applied()) < target:
        if process.poll() is not None:
            raise AssertionError(f"worker died:\n{log.read_text(errors='replace')[-3000:]}")
        if count != last:
            last, moved = count, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            lag = await group_lag(settings)
            unread = await _unread_records(settings)
            verdict = ("effects LOST (every record read)" if not any(unread.values())
                       else "worker STUCK with records unread")
            raise AssertionError(f"{count} of {target} applied, no progress for {stall_s:g} s; group lag {lag} "
                                 f"(offsets, transaction markers included); records past the committed offsets "
                                 f"{unread}: {verdict}; {await details() if details else ''}\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        await asyncio.sleep(0.25)


async def _unread_records(settings: Any) -> dict[str, int]:
    """Committed records past the worker group's committed offsets, per topic-partition
    (a transaction marker takes an offset but is no record, so the lag alone can mislead)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from streamrec.infra.kafka_clients import client_options

    admin = AIOKafkaAdminClient(**client_options(settings.broker))
    await admin.start()
    reader = consumer(settings.broker, enable_auto_commit=False)
    await reader.start()
    out: dict[str, int] = {}
    try:
        committed = await admin.list_consumer_group_offsets(settings.worker.app_id)
        parts = [TopicPartition(t, p) for t in (settings.topics.clickstream, settings.topics.by_item) for p in range(PARTITIONS)]
        reader.assign(parts)
        ends = await reader.end_offsets(parts)
        for tp in parts:
            start = committed[tp].offset if tp in committed else 0
            n = 0
            if start < ends[tp]:
                reader.seek(tp, start)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    batch = await reader.getmany(tp, timeout_ms=500)
                    n += len(batch.get(tp, []))
                    if await reader.position(tp) >= ends[tp]:
                        break
            out[f"{tp.topic.rsplit('.', 1)[-1]}[{tp.partition}] {start}..{ends[tp]}"] = n
    finally:
        await reader.stop()
        await admin.close()
    return out


async def _answered_event_ids(settings: Any) -> Counter[str]:
    """Every event id a committed recommendation names as its cause or in its covers."""
    from streamrec.features.export import read_topic

    reader = consumer(settings.broker, settings.topics.recommendations, auto_offset_reset="earliest")
    await reader.start()
    try:
        records = await read_topic(reader, idle_s=3.0)
    finally:
        await reader.stop()
    answered: Counter[str] = Counter()
    for record in records:
        rec = json.loads(record.value)
        answered.update([rec["cause_event_id"], *rec["covers"]])
    return answered


async def test_sigkill_mid_stream_then_restart_leaves_exact_features_and_no_duplicate_list(
    bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path
) -> None:
    base = redis_url.rpartition("/")[0]
    settings = isolated_settings(
        bootstrap_servers, f"{base}/{EOS_DB}", tmp_path,
        broker={"partitions": PARTITIONS, "processing_guarantee": "exactly_once"},
        recommend={"trigger_types": ["rating"]},
        models={"registry_dir": str(model_registry)},
    )
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    events = _events()
    ratings: dict[str, list[float]] = defaultdict(list)
    by_item: dict[str, list[float]] = defaultdict(list)
    for e in events:
        ratings[e.user_id].append(e.rating)  # type: ignore[arg-type]
        by_item[e.item_id].append(e.rating)  # type: ignore[index, arg-type]
    users, items = sorted(ratings), sorted(by_item)

    async def items_applied() -> int:
        rows = await store.read_batch(ITEM_VIEW, items, ["n_rating"])
        return sum(r["n_rating"] or 0 for r in rows)

    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    first = start_worker(settings, first_log)
    second = None
    try:
        await wait_ready(settings, store, first, first_log, timeout_s=400)
        # paced, so the kill lands while events still arrive: sent at once, a fast worker took them
        # all in one transaction, and the item rows (their agent reads by_item read_committed, a
        # commit at a time) went from under a third to all between two polls
        sending = asyncio.create_task(paced_produce(settings, events, SEND_RATE, asyncio.Event()))

        await _wait_for(items_applied, N_EVENTS // 3, first, first_log, settings)
        first.send_signal(signal.SIGKILL)  # mid-stream: an open transaction, uncommitted state
        first.wait(10)
        killed_at = await items_applied()
        await sending

        second = start_worker(settings, second_log)
        restarted = time.monotonic()
        async def short_items() -> str:
            rows = await store.read_batch(ITEM_VIEW, items, ["n_rating"])
            short = {i: (r["n_rating"], len(by_item[i])) for i, r in zip(items, rows) if r["n_rating"] != len(by_item[i])}
            urows = await store.read_batch(USER_VIEW, users, ["n_rating"])
            ushort = {u: (r["n_rating"], len(ratings[u])) for u, r in zip(users, urows) if r["n_rating"] != len(ratings[u])}
            return (f"items (applied, sent) that differ: {dict(list(short.items())[:10])}; "
                    f"users: {dict(list(ushort.items())[:10])}")

        await _wait_for(items_applied, N_EVENTS, second, second_log, settings, details=short_items)
        print(f"killed at {killed_at} applied; the restarted worker applied all {N_EVENTS} events "
              f"{time.monotonic() - restarted:.1f} s after its start")
        await asyncio.sleep(2.0)  # anything doubled would land now
        user_rows = await store.read_batch(USER_VIEW, users, ["n_rating", "rating_mean"])
        item_rows = await store.read_batch(ITEM_VIEW, items, ["n_rating", "rating_mean"])
        answered = await _answered_event_ids(settings)
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            stop_worker(second)
        await store.close()

    assert killed_at < N_EVENTS, "the kill came after the last event: nothing was tested"
    for user, row in zip(users, user_rows):
        assert row["n_rating"] == len(ratings[user]), user
        assert row["rating_mean"] == pytest.approx(sum(ratings[user]) / len(ratings[user]), rel=1e-9), user
    for item, row in zip(items, item_rows):
        assert row["n_rating"] == len(by_item[item]), item
        assert row["rating_mean"] == pytest.approx(sum(by_item[item]) / len(by_item[item]), rel=1e-9), item
    sent_ids = {e.event_id for e in events}
    twice = {event_id: n for event_id, n in answered.items() if n > 1 and event_id in sent_ids}
    assert not twice, f"events answered more than once: {dict(list(twice.items())[:10])}"
    assert sent_ids <= set(answered), f"{len(sent_ids - set(answered))} events never answered"
