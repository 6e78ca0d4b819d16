"""A worker killed with nothing committed re-reads everything and routes every stray
record a second time: the second copies must change nothing (features/routing.py).

Offsets are never committed in the first run (a commit interval longer than the run)
and states reach their changelogs after every batch, so the restarted worker meets
each of its earlier effects again: the users' own records and the first copies are
caught by their offset marks, the second copies by the mark on the originals' offsets
alone (the event-id window holds one id, so it cannot catch them)."""

from __future__ import annotations

import asyncio
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.routing import routed_from, user_partition
from streamrec.features.verify import verify
from streamrec.infra.kafka_clients import producer
from streamrec.infra.stack import free_port
from streamrec.stream.runtime import stop_process
from streamrec.stream.settings import Settings
from streamrec.stream.topics import ensure_topics
from tests.stream.accounting import counting_worker_settings, read_all, wait_for_counters
from tests.stream.conftest import RunningWorker, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
USERS, PER_CLIENT = 10, 50


def _split_users(partitions: int) -> list[str]:
    users = (f"crash-{n}" for n in range(10_000))
    return [u for u in users if zlib.crc32(u.encode()) % partitions != user_partition(u, partitions)][:USERS]


def _events(users: list[str], client: str) -> list[ClickEvent]:
    t0 = datetime.now(timezone.utc)
    return [ClickEvent(event_id=f"{u}-{client}-{k}", user_id=u, item_id=f"i{k % 9}", type=EventType.RATING,
                       rating=float(k % 6), ts=t0 + timedelta(milliseconds=k)) for u in users for k in range(PER_CLIENT)]


async def _send(settings: Settings, direct: list[ClickEvent], stray: list[ClickEvent]) -> None:
    from confluent_kafka import Producer

    client = producer(settings.broker)
    await client.start()
    try:
        for e in direct:
            await client.send(settings.topics.clickstream, e.to_bytes(), key=e.user_id.encode())
        await client.flush()
    finally:
        await client.stop()
    out = Producer({"bootstrap.servers": settings.broker.bootstrap_servers})  # librdkafka's default partitioner
    for e in stray:
        out.produce(settings.topics.clickstream, key=e.user_id.encode(), value=e.to_bytes())
    assert out.flush(30) == 0


def _run(settings: Settings, log: Path) -> RunningWorker:
    port = free_port()
    settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"prometheus_port": port})})
    return RunningWorker(settings, start_worker(settings, log), log)


async def test_second_copies_after_a_crash_change_nothing(bootstrap_servers: str, redis_url: str, tmp_path: Path) -> None:
    settings = counting_worker_settings(bootstrap_servers, redis_url, tmp_path, state_flush_keys=1)
    settings = settings.model_copy(update={
        "broker": settings.broker.model_copy(update={"commit_interval_s": 600}),
        "features": settings.features.model_copy(update={"dedup_max_ids": 1}),
    })
    users = _split_users(settings.broker.partitions)
    direct, stray = _events(users, "aio"), _events(users, "ck")
    total, elsewhere = len(direct) + len(stray), len(stray)
    await ensure_topics(settings)
    log = tmp_path / "worker.log"
    first = _run(settings, log)
    try:
        await _send(settings, direct, stray)
        await wait_for_counters(first, lambda c: c.get("events_valid", 0) >= total and c.get("routed", 0) >= elsewhere,
                                timeout_s=120)
        await asyncio.sleep(3)  # the last states and rows delivered; still no offset committed
        first.process.kill()
        first.process.wait()
    finally:
        stop_process(first.process)

    second = _run(settings, log)
    try:
        # everything again: the users' records, the originals (routed again), the first copies, the second copies
        again = total + 2 * elsewhere
        try:
            seen = await wait_for_counters(second, lambda c: c.get("events_in", 0) >= again, timeout_s=150)
        except AssertionError as stuck:  # say whether the second copies were never sent or never read back
            on_topic = await read_all(settings, settings.topics.clickstream)
            copies = sum(routed_from(r.headers) is not None for r in on_topic)
            raise AssertionError(f"{len(on_topic)} records on {settings.topics.clickstream}, {copies} of them copies "
                                 f"(expected {total + 2 * elsewhere} and {2 * elsewhere})") from stuck
        assert (seen["events_in"], seen.get("routed", 0), seen.get("events_valid", 0)) == (again, elsewhere, 0)
        assert seen["skipped_duplicate"] == total + elsewhere
        clicks = await read_all(settings, settings.topics.clickstream)
        copies = [routed_from(r.headers) for r in clicks if routed_from(r.headers) is not None]
        assert len(copies) == 2 * elsewhere and len(set(copies)) == elsewhere  # each original copied twice
        report = await verify(settings, wait_s=30)
        assert report.ok, report.mismatches
        assert (report.events_applied, report.routed, report.repeated) == (total, elsewhere, elsewhere)
        assert second.process.poll() is None, second.log_tail()
    finally:
        stop_process(second.process)
