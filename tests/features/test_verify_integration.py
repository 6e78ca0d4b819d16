"""``verify`` on a real worker: the traffic that used to lose events passes it, and a
wrong online row fails it.

One worker process, its own topics and Feast project: a burst of 300 events in one
millisecond, a backlog of old events inside the lateness after recent ones, a late
event, an invalid payload and client re-sends. Then the online store must equal the
recomputation from ``clickstream`` (late and invalid records in the DLQ).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import USER_VIEW, FeatureRow, epoch_ms
from streamrec.features.user_state import UserState
from streamrec.features.verify import verify
from streamrec.tools.harness import isolated_settings, produce, start_worker, stop_worker, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

VERIFY_DB = 9


def _events(now: datetime) -> tuple[list[ClickEvent], int]:
    def rating(user: str, n: int, ts: datetime) -> ClickEvent:
        return ClickEvent(event_id=f"{user}-{n}", user_id=user, item_id=f"i{n % 40}", type=EventType.RATING,
                          rating=float(n % 5 + 1), ts=ts)

    burst = [rating("burst", n, now) for n in range(300)]
    recent = [rating("backlog", n, now + timedelta(milliseconds=n)) for n in range(200)]
    old = [rating("backlog", 1000 + n, now - timedelta(minutes=30, seconds=n)) for n in range(150)]
    late = [rating("late", 0, now), rating("late", 1, now - timedelta(hours=2))]
    resent = burst[-5:] + old[-3:]  # re-sent inside the id window (fewer than dedup_max_ids newer events)
    return burst + recent + old + late + resent, len(resent)


async def test_the_online_store_equals_the_recomputation_and_a_wrong_row_is_caught(
    bootstrap_servers: str, redis_url: str, tmp_path: Path
) -> None:
    base = redis_url.rpartition("/")[0]
    settings = isolated_settings(bootstrap_servers, f"{base}/{VERIFY_DB}", tmp_path, broker={"partitions": 2})
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    events, resent = _events(datetime.now(timezone.utc))
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        await wait_ready(settings, store, worker, tmp_path / "worker.log", timeout_s=400)
        await produce(settings, events)
        await _produce_raw(settings, b'{"event_id": "broken"')
        report = await verify(settings, wait_s=180)
    finally:
        stop_worker(worker)
    try:
        assert report.ok, report.mismatches
        assert (report.late, report.invalid, report.repeated) == (1, 1, resent)
        [burst, backlog] = await store.read_batch(USER_VIEW, ["burst", "backlog"], ["n_rating"])
        assert (burst["n_rating"], backlog["n_rating"]) == (300, 350)

        wrong = {**UserState().features(), "n_rating": 299, "event_count": 299}
        await store.write_batch([FeatureRow(USER_VIEW, "burst", wrong, epoch_ms(datetime.now(timezone.utc)))])
        tampered = await verify(settings)
        assert not tampered.ok
        assert "user burst: n_rating online=299 expected=300" in tampered.mismatches
    finally:
        await store.close()


async def _produce_raw(settings: object, payload: bytes) -> None:
    from streamrec.infra.kafka_clients import producer

    client = producer(settings.broker)  # type: ignore[attr-defined]
    await client.start()
    try:
        await client.send_and_wait(settings.topics.clickstream, payload, key=b"broken")  # type: ignore[attr-defined]
    finally:
        await client.stop()
