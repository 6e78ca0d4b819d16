"""The embedded broker compacts: a compacted topic keeps the latest record per key.

Faust declares its table changelogs with ``cleanup.policy=compact`` (checked against a
running worker in tests/stream/test_worker_integration.py); this checks that the broker
acts on it, so a worker's recovery reads one record per key, not the whole history.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = 10
ROUNDS = 8


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        got: list[tuple[bytes, bytes]] = []
        idle = time.monotonic()
        while time.monotonic() - idle < 1.5:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                idle = time.monotonic()
                got.extend((r.key, r.value) for r in records)
        return got
    finally:
        await consumer.stop()


async def test_a_compacted_topic_keeps_the_latest_value_per_key(bootstrap_servers: str) -> None:
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
            "delete.retention.ms": "100", "min.compaction.lag.ms": "0",
        })])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for round_ in range(ROUNDS):
            for key in range(KEYS):
                await producer.send_and_wait(topic, f"v{round_}".encode(), key=f"k{key}".encode())
            await asyncio.sleep(0.2)  # past segment.ms: the next write rolls a new segment
        await producer.send_and_wait(topic, b"roll", key=b"roller")
    finally:
        await producer.stop()
    written = ROUNDS * KEYS + 1

    deadline = time.monotonic() + 60
    records = await _read_all(bootstrap_servers, topic)
    while len(records) >= written // 2 and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        records = await _read_all(bootstrap_servers, topic)

    assert len(records) < written // 2, f"not compacted: {len(records)} of {written} records remain"
    latest = {key: value for key, value in records}
    assert latest == {**{f"k{k}".encode(): f"v{ROUNDS - 1}".encode() for k in range(KEYS)}, b"roller": b"roll"}
