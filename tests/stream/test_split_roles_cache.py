"""The split roles' cache race, replayed step by step on a real redis-server.

The features role drops a user's cached list when it accepts a new event; the
recommend role writes a list when it has ranked one. A list ranked for an older
event that reaches Redis after the newer event's invalidation must not be served
as the user's list (stream/rec_cache.py keeps a version per user).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.stream.processor import EventProcessor
from streamrec.stream.settings import load_settings
from tests.stream.test_processor_accounting import FakeTable, RecordingSink

pytestmark = pytest.mark.integration


@dataclass
class Message:
    key: bytes | None
    value: bytes


class GatedSink(RecordingSink):
    """The recommendations topic, holding each send until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None) -> None:
        self.reached.set()
        await self.gate.wait()
        await super().send(key=key, value=value, partition=partition)


def _click(n: int) -> ClickEvent:
    return ClickEvent(event_id=f"e{n}", user_id="u1", item_id=f"i{n}", type=EventType.CLICK,
                      ts=datetime.now(timezone.utc))


def _processor(role: str, redis_url: str, project: str, **sinks: Any) -> EventProcessor:
    settings = load_settings(redis={"url": redis_url}, features={"project": project},
                             recommend={"recommender": "top_mean"}, worker={"role": role})
    tables = {name: FakeTable() for name in ("users", "shards", "items")}
    defaults = {name: RecordingSink() for name in ("dlq", "by_item", "recommendations")}
    return EventProcessor(settings, **tables, **{**defaults, **sinks})


async def test_a_list_ranked_for_an_older_event_does_not_outlive_a_newer_invalidation(redis_url: str) -> None:
    project = f"race_{uuid.uuid4().hex[:8]}"
    handed_over, lists = RecordingSink(), GatedSink()
    features = _processor("features", redis_url, project, to_recommend=handed_over)
    recommend = _processor("recommend", redis_url, project, recommendations=lists)
    await features.start()
    await recommend.start()
    try:
        assert features.clients is not None and features.clients.cache is not None
        cache = features.clients.cache
        await features.on_clickstream([(Message(b"u1", _click(1).to_bytes()), 0, 0)])
        task_1 = Message(b"u1", handed_over.sent[-1]["value"])
        ranking_1 = asyncio.create_task(recommend.on_recommend_tasks([task_1]))
        await asyncio.wait_for(lists.reached.wait(), 10)  # e1 ranked, its list not written yet

        await features.on_clickstream([(Message(b"u1", _click(2).to_bytes()), 0, 1)])  # e2 invalidates
        lists.gate.set()
        await asyncio.wait_for(ranking_1, 10)  # e1's list reaches Redis after e2's invalidation

        assert await cache.get("u1") is None  # e1's list is stale: e2 is being ranked
        await recommend.on_recommend_tasks([Message(b"u1", handed_over.sent[-1]["value"])])
        cached = await cache.get("u1")
        assert cached is not None and cached.cause_event_id == "e2"
    finally:
        lists.gate.set()
        await features.stop()
        await recommend.stop()
