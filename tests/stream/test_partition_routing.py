"""One user's events from three clients that partition differently: aiokafka (murmur2,
Java's default), confluent-kafka and kcat with librdkafka's default partitioner
(``consistent_random``: crc32 of the key). The user's state must stay whole on the
user's partition: the records that land elsewhere are copied there (features/routing.py),
the user's state changelog is written on that partition only, and features/verify.py's
exact comparison holds. Under both processing guarantees."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.routing import routed_from, user_partition
from streamrec.features.schema import USER_VIEW
from streamrec.features.verify import verify
from streamrec.infra.kafka_clients import producer
from streamrec.stream.runtime import stop_process
from streamrec.stream.topics import ensure_topics
from tests.stream.accounting import counting_worker_settings, read_all, wait_for_counters
from tests.stream.conftest import RunningWorker, start_worker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (Debian: apt-get install kcat; .ci/run installs it)"),
]
PER_CLIENT = 20
ROUNDS = 3


def _split_user(partitions: int) -> str:
    """A user id that librdkafka's default partitioner puts on another partition than murmur2."""
    for n in range(1000):
        user = f"three-clients-{uuid.uuid4().hex[:6]}-{n}"
        if zlib.crc32(user.encode()) % partitions != user_partition(user, partitions):
            return user
    raise AssertionError("no such user id")


def _events(user: str, client: str, first: int, n: int, t0: datetime) -> list[ClickEvent]:
    return [ClickEvent(event_id=f"{user}-{client}-{k}", user_id=user, item_id=f"i{k % 7}", type=EventType.RATING,
                       rating=float(k % 6), ts=t0 + timedelta(milliseconds=k)) for k in range(first, first + n)]


async def _send_aiokafka(worker: RunningWorker, events: list[ClickEvent]) -> list[int]:
    client = producer(worker.settings.broker)
    await client.start()
    try:
        return [(await client.send_and_wait(worker.settings.topics.clickstream, e.to_bytes(),
                                            key=e.user_id.encode())).partition for e in events]
    finally:
        await client.stop()


def _send_confluent(worker: RunningWorker, events: list[ClickEvent]) -> list[int]:
    from confluent_kafka import Producer

    out = Producer({"bootstrap.servers": worker.settings.broker.bootstrap_servers})  # default partitioner
    landed: list[int] = []
    for e in events:
        out.produce(worker.settings.topics.clickstream, key=e.user_id.encode(), value=e.to_bytes(),
                    on_delivery=lambda err, msg: landed.append(-1 if err else msg.partition()))
    assert out.flush(30) == 0
    return landed


def _send_kcat(worker: RunningWorker, events: list[ClickEvent]) -> None:
    lines = "".join(f"{e.user_id}\t{e.to_bytes().decode()}\n" for e in events)
    sent = subprocess.run(["kcat", "-P", "-b", worker.settings.broker.bootstrap_servers, "-t",
                           worker.settings.topics.clickstream, "-K", "\t"],  # kcat's default partitioner
                          input=lines, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_one_users_events_from_three_clients_stay_on_the_users_partition(
    guarantee: str, bootstrap_servers: str, redis_url: str, tmp_path: Path
) -> None:
    settings = counting_worker_settings(bootstrap_servers, redis_url, tmp_path)
    settings = settings.model_copy(update={"broker": settings.broker.model_copy(update={"processing_guarantee": guarantee})})
    partitions = settings.broker.partitions
    assert partitions == 2
    user = _split_user(partitions)
    home = user_partition(user, partitions)
    await ensure_topics(settings)
    worker = RunningWorker(settings, start_worker(settings, tmp_path / "worker.log"), tmp_path / "worker.log")
    try:
        t0 = datetime.now(timezone.utc)
        sent: list[ClickEvent] = []
        for r in range(ROUNDS):  # the clients take turns
            first = r * 3 * PER_CLIENT
            batches = [_events(user, c, first + i * PER_CLIENT, PER_CLIENT, t0) for i, c in enumerate(("aio", "ck", "kcat"))]
            assert set(await _send_aiokafka(worker, batches[0])) == {home}
            assert set(_send_confluent(worker, batches[1])) == {1 - home}  # librdkafka put them elsewhere
            _send_kcat(worker, batches[2])
            sent += [e for batch in batches for e in batch]
        n, elsewhere = len(sent), 2 * ROUNDS * PER_CLIENT
        seen = await wait_for_counters(worker, lambda c: c.get("events_valid", 0) >= n, timeout_s=120)
        assert (seen["events_valid"], seen.get("routed", 0), seen.get("dlq", 0)) == (n, elsewhere, 0)
        assert seen["events_in"] == n + elsewhere  # every record once, every copy once

        # the librdkafka clients' records landed elsewhere and were copied home, once each
        clicks = await read_all(settings, settings.topics.clickstream)
        originals = [r for r in clicks if routed_from(r.headers) is None]
        copies = [r for r in clicks if routed_from(r.headers) is not None]
        assert sum(1 for r in originals if r.partition != home) == elsewhere
        assert sorted(routed_from(r.headers) for r in copies) == sorted((r.partition, r.offset) for r in originals
                                                                        if r.partition != home)
        assert {r.partition for r in copies} == {home}

        # the user's state was written to its own partition's changelog only
        changelog = await read_all(settings, f"{settings.worker.app_id}-features-user_state-changelog")
        mine = [r for r in changelog if r.key in (user.encode(), json.dumps(user).encode())]
        assert mine and {r.partition for r in mine} == {home}
        state = json.loads(mine[-1].value)
        assert set(state["applied"]) == {str(home), f"routed:{1 - home}"}

        report = await verify(settings, wait_s=30)
        assert report.ok, report.mismatches
        assert (report.events_applied, report.routed, report.invalid) == (n, elsewhere, 0)
        store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
        try:
            row = (await store.read_batch(USER_VIEW, [user], ["event_count", "rating_mean"]))[0]
        finally:
            await store.close()
        assert row["event_count"] == n
        assert row["rating_mean"] == pytest.approx(sum(e.rating or 0.0 for e in sent) / n)
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        stop_process(worker.process)
