"""The worker ends its producer's linger when a batch is done (stream/transport.py):
``send_lingering`` makes the held records sendable at once, ``flush_now`` delivers them
without waiting the linger out. Checked against the session's Apache Kafka with a linger
far longer than the waits, so a record that waited for it could not pass."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamrec.features.export import read_to_end
from streamrec.stream.transport import flush_now, send_lingering

pytestmark = [pytest.mark.integration]

LINGER_MS = 30_000  # what a record would wait without the calls under test
WAIT_S = 10.0  # each check's limit, a third of the linger


async def _read(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    """``topic``'s records by partition, in offset order."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await reader.start()
    try:
        records = await read_to_end(reader, timeout_s=WAIT_S)
    finally:
        await reader.stop()
    got: dict[int, list[bytes]] = {}
    for record in records:
        got.setdefault(record.partition, []).append(record.value)
    return got


async def test_records_held_for_the_linger_leave_when_told(bootstrap_servers: str) -> None:
    topic = f"linger-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    client = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=LINGER_MS)
    await client.start()
    try:
        await client.send_and_wait(topic, b"warm-up", partition=0)  # metadata and connection, not timed
        delivered = [await client.send(topic, f"a{n}".encode(), partition=n % 2) for n in range(4)]
        await asyncio.sleep(0.2)
        assert not any(f.done() for f in delivered), "the linger held nothing: this test checks nothing"
        assert send_lingering(client) >= 1
        await asyncio.wait_for(asyncio.gather(*delivered), WAIT_S)
        assert send_lingering(client) == 0  # nothing left to close
        # a record sent after a batch was closed goes in a new one, behind the first in its partition
        late = await client.send(topic, b"late", partition=0)
        await asyncio.wait_for(flush_now(client), WAIT_S)
        assert late.done() and late.result().offset > delivered[0].result().offset
    finally:
        await client.stop()
    assert await _read(bootstrap_servers, topic) == {0: [b"warm-up", b"a0", b"a2", b"late"], 1: [b"a1", b"a3"]}


def test_a_producer_not_yet_started_has_nothing_to_send() -> None:
    assert send_lingering(None) == 0
    asyncio.run(flush_now(None))
