"""The worker end to end (ingest, features, recommendations, metrics), through a real
broker, a real worker process and a real redis-server, read back through Feast's own SDK."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
import uuid
from collections import defaultdict

import pytest

from streamrec.features.messages import ClickEvent, DeadLetter, EventType, MetricsSnapshot, Recommendation
from streamrec.infra.kafka_clients import consumer, producer
from streamrec.stream.topics import ensure_topics
from tests.stream.conftest import RunningWorker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_USERS, N_ITEMS, N_VALID = 12, 15, 240

MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00", "invalid_encoding"),
    (b"{broken", "invalid_json"),
    (b'"just a string"', "not_an_object"),
    (json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "ts": 1}).encode(), "missing_field"),
    (json.dumps({"event_id": "x", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1, "extra": 1}).encode(), "unknown_field"),
    (json.dumps({"event_id": "y", "user_id": "u1", "item_id": "i1", "type": "rating", "rating": 11, "ts": 1}).encode(), "invalid_field"),
    (json.dumps({"event_id": "z", "user_id": "u1", "item_id": "i1", "type": "view", "rating": 3, "ts": 1}).encode(), "inconsistent_fields"),
    (b"{" + b" " * 5000 + b"}", "payload_too_large"),
]


def make_events() -> list[ClickEvent]:
    rng = random.Random(7)
    now = time.time()
    events = []
    for n in range(N_VALID):
        rated = rng.random() < 0.6
        events.append(ClickEvent(
            event_id=f"ev-{uuid.uuid4().hex}",
            user_id=f"u{rng.randrange(N_USERS)}",
            item_id=f"i{rng.randrange(N_ITEMS)}",
            type=EventType.RATING if rated else rng.choice([EventType.VIEW, EventType.CLICK, EventType.PURCHASE]),
            rating=rng.choice([1.0, 2.5, 3.0, 4.0, 4.5, 5.0]) if rated else None,
            ts=now - (N_VALID - n) * 0.01,
        ))
    return events


async def produce(worker: RunningWorker, events: list[ClickEvent]) -> None:
    s = worker.settings
    await ensure_topics(s)
    client = producer(s.broker)
    await client.start()
    try:
        for event in events:
            await client.send(s.topics.clickstream, event.to_bytes(), key=event.user_id.encode())
        for payload, _ in MALFORMED:
            await client.send(s.topics.clickstream, payload, key=b"bad")
        await client.flush()
    finally:
        await client.stop()


async def collect(worker: RunningWorker, topic: str, done, timeout_s: float) -> list[bytes]:  # type: ignore[no-untyped-def]
    client = consumer(worker.settings.broker, topic, auto_offset_reset="earliest")
    await client.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done(values):
            for records in (await client.getmany(timeout_ms=500)).values():
                values.extend(r.value for r in records)
            if worker.process.poll() is not None:
                raise AssertionError(f"worker died:\n{worker.log_tail()}")
    finally:
        await client.stop()
    return values


@pytest.fixture(scope="module")
def run(worker: RunningWorker) -> dict[str, object]:
    events = make_events()
    asyncio.run(produce(worker, events))
    t = worker.settings.topics
    event_ids = {e.event_id for e in events}

    def every_event_reached_a_list(values: list[bytes]) -> bool:
        recs = [Recommendation.model_validate_json(v) for v in values]
        return {r.cause_event_id for r in recs} | {c for r in recs for c in r.covers} >= event_ids

    recs = asyncio.run(collect(worker, t.recommendations, every_event_reached_a_list, 240))
    asyncio.run(collect(worker, t.dlq, lambda v: len(v) >= len(MALFORMED), 60))
    dlq = asyncio.run(collect(worker, t.dlq, lambda v: False, 3))  # then read it all again: no more than M
    metrics = asyncio.run(collect(worker, t.metrics, lambda v: len(v) >= 2, 15))
    return {"events": events, "recs": recs, "dlq": dlq, "metrics": metrics}


def test_every_user_who_sent_an_event_gets_a_recommendation(run: dict, worker: RunningWorker) -> None:
    recs = [Recommendation.model_validate_json(v) for v in run["recs"]]
    users = {e.user_id for e in run["events"]}
    assert {r.user_id for r in recs} >= users, worker.log_tail()
    event_ids = {e.event_id for e in run["events"]}
    assert all(r.cause_event_id in event_ids for r in recs)
    assert all(r.latency_ms.total >= 0 and r.model_version for r in recs)
    # every event's effect reached a list: its own, or a later one of its user's that covers it
    user_of = {e.event_id: e.user_id for e in run["events"]}
    reached = {r.cause_event_id for r in recs} | {c for r in recs for c in r.covers}
    assert reached >= event_ids
    assert all(user_of[c] == r.user_id for r in recs for c in r.covers)


def test_exactly_the_malformed_payloads_land_in_the_dlq_with_reasons(run: dict) -> None:
    letters = [DeadLetter.model_validate_json(v) for v in run["dlq"]]
    assert sorted(letter.reason for letter in letters) == sorted(reason for _, reason in MALFORMED)
    assert sorted(letter.raw_payload() for letter in letters) == sorted(payload for payload, _ in MALFORMED)


def test_metrics_snapshots_arrive_with_counts(run: dict) -> None:
    snaps = [MetricsSnapshot.model_validate_json(v) for v in run["metrics"]]
    assert len(snaps) >= 2
    total_in = sum(s.counts.get("events_in", 0) for s in snaps)
    assert total_in <= N_VALID + len(MALFORMED)
    assert all(s.window_end >= s.window_start for s in snaps)


def test_usr2_logs_where_each_partition_stands(run: dict, worker: RunningWorker) -> None:
    """kill -USR2 (stream/diagnose.py): with every event read, each clickstream partition's
    position has reached its highwater and the flow is on."""
    report = worker.where_it_stands()
    assert "where this worker stands" in report, report
    assert "flow: app suspended=False consumer flow_active=True" in report, report
    runs = "in its own thread" if worker.settings.worker.consumer_thread else "on the worker loop"
    assert f"consumer: {runs}" in report, report
    t = worker.settings.topics.clickstream
    for partition in range(worker.settings.broker.partitions):
        line = next((x for x in report.splitlines() if f"{t}[{partition}]: position=" in x), None)
        assert line is not None, report
        fields = dict(f.split("=", 1) for f in line.split(": ", 1)[1].split())
        assert fields["paused"] == "False" and int(fields["position"]) == int(fields["highwater"]) > 0, line


def test_table_changelogs_are_compacted_topics(run: dict, worker: RunningWorker) -> None:
    """Faust asks for compaction; the broker must hold it, so recovery reads one record per key."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    app_id = worker.settings.worker.app_id
    names = [f"{app_id}-{table}-changelog" for table in ("user_state", "item_state", "global_shard")]

    async def policies() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=worker.settings.broker.bootstrap_servers)
        await admin.start()
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        finally:
            await admin.close()
        found = {}
        for response in responses:
            for resource in response.resources:
                configs = {entry[0]: entry[1] for entry in resource[4]}
                found[resource[3]] = configs.get("cleanup.policy")
        return found

    assert asyncio.run(policies()) == {name: "compact" for name in names}


def test_features_read_through_feast_equal_the_means_recomputed_from_events(run: dict, feast_store, worker: RunningWorker) -> None:  # type: ignore[no-untyped-def]
    from streamrec.features.repo import feature_refs

    events: list[ClickEvent] = run["events"]
    by_user, by_item = defaultdict(list), defaultdict(list)
    for e in events:
        if e.rating is not None:
            by_user[e.user_id].append(e.rating)
            by_item[e.item_id].append(e.rating)
    users = sorted({e.user_id for e in events})
    items = sorted({e.item_id for e in events if e.item_id})
    deadline = time.monotonic() + 30
    while True:
        got_users = feast_store.get_online_features(
            features=feature_refs("user_features", ["rating_mean", "n_rating", "event_count"]),
            entity_rows=[{"user_id": u} for u in users]).to_dict()
        got_items = feast_store.get_online_features(
            features=feature_refs("item_features", ["rating_mean", "n_rating"]),
            entity_rows=[{"item_id": i} for i in items]).to_dict()
        counts = dict(zip(users, got_users["event_count"]))
        if all(counts[u] == sum(e.user_id == u for e in events) for u in users) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for user, mean, n in zip(users, got_users["rating_mean"], got_users["n_rating"]):
        ratings = by_user.get(user, [])
        assert n == len(ratings)
        if ratings:
            assert mean == pytest.approx(sum(ratings) / len(ratings), abs=1e-9)
    for item, mean, n in zip(items, got_items["rating_mean"], got_items["n_rating"]):
        ratings = by_item.get(item, [])
        assert n == len(ratings), worker.log_tail()
        if ratings:
            assert mean == pytest.approx(sum(ratings) / len(ratings), abs=1e-9)


def test_a_standard_kafka_client_gets_a_recommendation(run: dict, worker: RunningWorker) -> None:
    """confluent-kafka (librdkafka), which streamrec does not use itself, end to end."""
    from confluent_kafka import Consumer, Producer

    s = worker.settings
    event = ClickEvent(event_id=f"ck-{uuid.uuid4().hex}", user_id="standard-client", item_id="i1",
                       type=EventType.CLICK, ts=time.time())
    out = Producer({"bootstrap.servers": s.broker.bootstrap_servers, "partitioner": "murmur2_random"})
    out.produce(s.topics.clickstream, key=event.user_id.encode(), value=event.to_bytes())
    assert out.flush(10) == 0
    inbox = Consumer({"bootstrap.servers": s.broker.bootstrap_servers, "group.id": f"ck-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    inbox.subscribe([s.topics.recommendations])
    found = None
    deadline = time.monotonic() + 60
    try:
        while found is None and time.monotonic() < deadline:
            message = inbox.poll(0.5)
            if message is None or message.error():
                continue
            rec = Recommendation.model_validate_json(message.value())
            if rec.cause_event_id == event.event_id:
                found = rec
    finally:
        inbox.close()
    assert found is not None, worker.log_tail()
    assert found.user_id == "standard-client" and found.items


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (Debian: apt-get install kcat; .ci/run installs it)")
def test_kcat_produces_an_event_and_reads_its_recommendation(run: dict, worker: RunningWorker) -> None:
    """Debian's kcat (librdkafka), a client nobody here wrote, exactly as the README shows it."""
    s = worker.settings
    event = ClickEvent(event_id=f"kcat-{uuid.uuid4().hex}", user_id="kcat-user", item_id="i2",
                       type=EventType.CLICK, ts=time.time())
    broker = s.broker.bootstrap_servers
    produced = subprocess.run(
        ["kcat", "-P", "-b", broker, "-t", s.topics.clickstream, "-K", "\t", "-X", "partitioner=murmur2_random"],
        input=f"{event.user_id}\t{event.to_bytes().decode()}\n", capture_output=True, text=True, timeout=30,
    )
    assert produced.returncode == 0, produced.stderr
    found = None
    deadline = time.monotonic() + 60
    while found is None and time.monotonic() < deadline:
        consumed = subprocess.run(
            ["kcat", "-C", "-b", broker, "-t", s.topics.recommendations, "-o", "beginning", "-e", "-q"],
            capture_output=True, text=True, timeout=60,
        )
        assert consumed.returncode == 0, consumed.stderr
        lists = [Recommendation.model_validate_json(line) for line in consumed.stdout.splitlines() if line.strip()]
        found = next((rec for rec in lists if rec.cause_event_id == event.event_id), None)
        if found is None:
            time.sleep(0.5)
    assert found is not None, worker.log_tail()
    assert found.user_id == "kcat-user" and found.items


@pytest.fixture
def split_workers(bootstrap_servers: str, redis_url: str, model_registry, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.stream.conftest import start_worker, stop_worker, worker_settings

    data_dir = tmp_path_factory.mktemp("split")
    base = worker_settings(bootstrap_servers, redis_url, data_dir, model_registry)
    procs = []
    for role in ("features", "recommend"):
        settings = base.model_copy(update={"worker": base.worker.model_copy(update={"role": role, "id": f"{base.worker.id}-{role}"})})
        procs.append(RunningWorker(settings, start_worker(settings, data_dir / f"{role}.log"), data_dir / f"{role}.log"))
    try:
        yield procs
    finally:
        for w in procs:
            stop_worker(w.process)


def test_features_and_recommend_roles_in_separate_processes_serve_every_user(split_workers: list[RunningWorker]) -> None:
    features_worker, recommend_worker = split_workers
    events = make_events()[:60]
    asyncio.run(produce(features_worker, events))
    users = {e.user_id for e in events}
    event_ids = {e.event_id for e in events}

    def every_event_reached_a_list(values: list[bytes]) -> bool:
        recs = [Recommendation.model_validate_json(v) for v in values]
        return {r.cause_event_id for r in recs} | {c for r in recs for c in r.covers} >= event_ids

    recs = [Recommendation.model_validate_json(v) for v in asyncio.run(
        collect(recommend_worker, features_worker.settings.topics.recommendations, every_event_reached_a_list, 240))]
    assert {r.user_id for r in recs} >= users, features_worker.log_tail() + recommend_worker.log_tail()
    assert {r.cause_event_id for r in recs} | {c for r in recs for c in r.covers} >= event_ids
    assert {r.worker_id for r in recs} == {recommend_worker.settings.worker.id}


def test_cache_holds_each_users_list_for_their_latest_event(run: dict, worker: RunningWorker) -> None:
    from streamrec.stream.rec_cache import RecommendationCache

    events: list[ClickEvent] = run["events"]
    last_event = {e.user_id: e.event_id for e in events}

    async def read_all() -> tuple[dict[str, str | None], float]:
        cache = RecommendationCache.from_url(worker.settings.redis.effective_url, worker.settings.features.project, 60)
        try:
            got = {u: (await cache.get(u)) for u in last_event}
            return {u: (r.cause_event_id if r else None) for u, r in got.items()}, cache.hit_rate
        finally:
            await cache.close()

    cached, hit_rate = asyncio.run(read_all())
    assert cached == last_event
    assert hit_rate == 1.0


def test_a_click_brings_the_items_co_visitation_neighbours_ranked_by_the_promoted_model(
    run: dict, worker: RunningWorker, model_registry
) -> None:  # type: ignore[no-untyped-def]
    from streamrec.models.registry import ModelRegistry

    s = worker.settings
    now = time.time()
    # Ten shoppers look at B or C and then at item A: B and C become A's co-visitation neighbours
    # (by default an item learns the items viewed just before it; covisit_symmetric adds the other way).
    pattern = []
    for n in range(10):
        shopper = f"shopper-{n}"
        pattern.append(ClickEvent(event_id=f"p-{uuid.uuid4().hex}", user_id=shopper, item_id="BC"[n % 2],
                                  type=EventType.VIEW, ts=now + n * 0.01))
        pattern.append(ClickEvent(event_id=f"p-{uuid.uuid4().hex}", user_id=shopper, item_id="A", type=EventType.VIEW,
                                  ts=now + n * 0.01 + 0.001))
    click = ClickEvent(event_id=f"click-{uuid.uuid4().hex}", user_id="newcomer", item_id="A", type=EventType.CLICK, ts=now + 1)

    async def send(events: list[ClickEvent]) -> None:
        client = producer(s.broker)
        await client.start()
        for e in events:
            await client.send_and_wait(s.topics.clickstream, e.to_bytes(), key=e.user_id.encode())
        await client.stop()

    asyncio.run(send(pattern))
    time.sleep(2.0)  # the item side and the writer flush (ms), with margin for a loaded machine
    asyncio.run(send([click]))
    values = asyncio.run(collect(worker, s.topics.recommendations,
                                 lambda vs: any(Recommendation.model_validate_json(v).cause_event_id == click.event_id for v in vs), 120))
    rec = next(r for r in map(Recommendation.model_validate_json, values) if r.cause_event_id == click.event_id)
    by_item = {i.item_id: i for i in rec.items}
    assert {"B", "C"} <= set(by_item), rec.items
    assert by_item["B"].source == "covisit" and by_item["C"].source == "covisit"
    assert "A" not in by_item  # already seen
    assert rec.model_version == ModelRegistry(model_registry).current_version()
    lat = rec.latency_ms
    assert lat.candidates > 0 and lat.features > 0 and lat.scoring > 0 and lat.total >= lat.scoring
