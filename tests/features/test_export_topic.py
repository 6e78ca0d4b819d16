"""``streamrec features export --from-topic`` reads clickstream as the worker does:
records not keyed by their user are not events, and a copy the worker routed to its
user's partition (features/routing.py) is not a second event."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from streamrec.features.export import dump_topic
from streamrec.features.routing import routed_header
from streamrec.infra.kafka_clients import consumer, producer
from streamrec.stream.settings import load_settings

pytestmark = pytest.mark.integration


def _event(event_id: str, user: str = "u1") -> bytes:
    return json.dumps({"event_id": event_id, "user_id": user, "item_id": "i1", "type": "view", "ts": 1}).encode()


async def test_dump_topic_keeps_what_the_worker_applies(bootstrap_servers: str) -> None:
    settings = load_settings(broker={"bootstrap_servers": bootstrap_servers})
    topic = f"dump-{uuid.uuid4().hex[:8]}"
    out = producer(settings.broker)
    await out.start()
    try:
        await out.send_and_wait(topic, _event("kept"), key=b"u1")
        await out.send_and_wait(topic, _event("kept"), key=b"u1", headers=routed_header(1, 0))  # its routed copy
        await out.send_and_wait(topic, _event("no-key"))
        await out.send_and_wait(topic, _event("other-key"), key=b"u2")
        await out.send_and_wait(topic, b"{broken", key=b"u1")
    finally:
        await out.stop()
    client = consumer(settings.broker, topic, auto_offset_reset="earliest")
    await client.start()
    try:
        events = await dump_topic(client, idle_s=2.0)
    finally:
        await client.stop()
    assert [e.event_id for e in events] == ["kept"]


async def test_read_to_end_ends_on_a_topic_that_never_falls_quiet(bootstrap_servers: str) -> None:
    """A record every 20 ms keeps an idle-timeout read going for ever; read_to_end stops at
    the end offsets it found, with every record sent before it began."""
    from streamrec.features.export import read_to_end, read_topic

    settings = load_settings(broker={"bootstrap_servers": bootstrap_servers})
    topic = f"busy-{uuid.uuid4().hex[:8]}"
    out = producer(settings.broker)
    await out.start()
    before = [f"before-{i}".encode() for i in range(50)]
    for value in before:
        await out.send(topic, value, key=b"k")
    await out.flush()
    stop = asyncio.Event()

    async def keep_sending() -> None:
        n = 0
        while not stop.is_set():
            await out.send_and_wait(topic, f"during-{n}".encode(), key=b"k")
            n += 1
            await asyncio.sleep(0.02)

    sending = asyncio.create_task(keep_sending())
    client = consumer(settings.broker, topic, auto_offset_reset="earliest")
    await client.start()
    try:
        records = await asyncio.wait_for(read_to_end(client, timeout_s=30), 30)
        with pytest.raises(asyncio.TimeoutError):  # the idle-timeout read does not end while records arrive
            await asyncio.wait_for(read_topic(client, idle_s=0.5), 3)
    finally:
        stop.set()
        await sending
        await client.stop()
        await out.stop()
    values = [r.value for r in records]
    assert values[:50] == before
    assert all(v.startswith(b"during-") for v in values[50:])
