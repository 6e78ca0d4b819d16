"""Helpers of the fault tests (tests/stream/test_faults*.py): events, waiting on the
online store, what a worker answered, committed offsets, and the record each test leaves
for the reliability report (tools/reliability.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import ITEM_VIEW
from streamrec.features.verify import VerifyReport, verify
from streamrec.infra.kafka_clients import consumer
from streamrec.models.datasets import load_movielens
from streamrec.tools.reliability import write_record

WAIT_S = 150.0  # generous: the 2 cores are shared with other suites


CLICK_EVERY = 20  # one event in 20 is a click, the type the tests rank for: lists to count, ranking kept light


def movielens_events(n: int, tag: str) -> list[ClickEvent]:
    """The first ``n`` MovieLens ratings, 1 ms apart from now (UTC): rating events, and
    every ``CLICK_EVERY``-th a click on the same item instead."""
    frame = load_movielens().interactions.iloc[:n]
    start = datetime.now(timezone.utc)
    return [
        ClickEvent(event_id=f"{tag}-{k}", user_id=str(r.user_id), item_id=str(r.item_id),
                   ts=start + timedelta(milliseconds=k),
                   **({"type": EventType.CLICK} if k % CLICK_EVERY == 0 else {"type": EventType.RATING, "rating": float(r.rating)}))
        for k, r in enumerate(frame.itertuples(index=False))
    ]


async def events_applied(store: RedisFeatureStore, items: Sequence[str]) -> int:
    """Events the online item rows count, summed: each event counts once for its one item."""
    total = 0
    for start in range(0, len(items), 5000):
        rows = await store.read_batch(ITEM_VIEW, list(items[start:start + 5000]), ["event_count"])
        total += sum(int(r["event_count"] or 0) for r in rows)  # type: ignore[call-overload]
    return total


async def paced_produce(settings: Any, events: Sequence[ClickEvent], rate: float, stop: asyncio.Event) -> int:
    """Send ``events`` keyed by user at about ``rate`` per second until they run out or
    ``stop`` is set; returns how many were sent (all acknowledged)."""
    from streamrec.infra.kafka_clients import producer

    client = producer(settings.broker)
    await client.start()
    sent, chunk, began = 0, max(1, int(rate / 10)), time.monotonic()
    try:
        while sent < len(events) and not stop.is_set():
            for event in events[sent:sent + chunk]:
                await client.send(settings.topics.clickstream, event.to_bytes(), key=event.user_id.encode())
            sent = min(len(events), sent + chunk)
            await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))
        await client.flush()
    finally:
        await client.stop()
    return sent


def log_tails(logs: Sequence[Path], chars: int = 2500) -> str:
    return "\n".join(f"--- {log}\n{log.read_text(errors='replace')[-chars:]}" for log in logs if log.exists())


async def wait_until(condition: Callable[[], Awaitable[bool]], processes: Sequence[subprocess.Popen[bytes]],
                     logs: Sequence[Path], what: str, timeout_s: float = WAIT_S) -> float:
    """Poll ``condition`` until true; seconds taken. Fails (with the logs) when a process
    exits or ``timeout_s`` passes."""
    began = time.monotonic()
    while not await condition():
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a worker exited ({process.returncode}) waiting for {what}:\n{log_tails(logs)}")
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{log_tails(logs)}")
        await asyncio.sleep(0.25)
    return time.monotonic() - began


async def wait_for_count(count: Callable[[], Awaitable[int]], target: int, processes: Sequence[subprocess.Popen[bytes]],
                         logs: Sequence[Path], what: str, stall_s: float = 60.0, timeout_s: float = 600.0) -> float:
    """Poll ``count()`` until it reaches ``target``; seconds taken. Fails when a process
    exits, or when the count stops growing for ``stall_s`` (a loss, not a slow machine:
    the message says which), or after ``timeout_s`` in all."""
    began = last_change = time.monotonic()
    last = -1
    while (now := await count()) < target:
        if now != last:
            last, last_change = now, time.monotonic()
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a worker exited ({process.returncode}) waiting for {what} "
                                     f"({now} of {target}):\n{log_tails(logs)}")
        if time.monotonic() - last_change > stall_s or time.monotonic() - began > timeout_s:
            raise AssertionError(f"{what}: stuck at {now} of {target} for {time.monotonic() - last_change:.0f} s "
                                 f"({time.monotonic() - began:.0f} s in all)\n{log_tails(logs)}")
        await asyncio.sleep(0.25)
    return time.monotonic() - began


async def recommendations(settings: Any, idle_s: float | None = 3.0) -> list[dict[str, Any]]:
    """Every committed recommendation so far, as JSON objects: read until none arrives for
    ``idle_s``, or with None up to the end offsets as of the call (while workers still send)."""
    from streamrec.features.export import read_to_end, read_topic

    reader = consumer(settings.broker, settings.topics.recommendations, auto_offset_reset="earliest")
    await reader.start()
    try:
        records = await (read_topic(reader, idle_s=idle_s) if idle_s is not None else read_to_end(reader))
        return [json.loads(r.value) for r in records]
    finally:
        await reader.stop()


def answered(lists: Sequence[dict[str, Any]]) -> Counter[str]:
    """How many lists name each event id as their cause or in their covers."""
    count: Counter[str] = Counter()
    for rec in lists:
        count.update([rec["cause_event_id"], *rec["covers"]])
    return count


async def clickstream_offsets(settings: Any, idle_s: float = 2.0) -> dict[str, tuple[int, int]]:
    """event id → (partition, offset) of its record on ``clickstream``."""
    from streamrec.features.export import read_topic

    reader = consumer(settings.broker, settings.topics.clickstream, auto_offset_reset="earliest")
    await reader.start()
    try:
        return {json.loads(r.value)["event_id"]: (r.partition, r.offset) for r in await read_topic(reader, idle_s=idle_s)}
    finally:
        await reader.stop()


async def committed_offsets(settings: Any, group: str) -> dict[int, int]:
    """The consumer group's committed offset per ``clickstream`` partition (0 when none)."""
    from aiokafka import TopicPartition

    reader = consumer(settings.broker, group_id=group)
    await reader.start()
    try:
        out = {}
        for p in range(settings.broker.partitions):
            out[p] = await reader.committed(TopicPartition(settings.topics.clickstream, p)) or 0
        return out
    finally:
        await reader.stop()


@dataclass
class Outcome:
    """What a fault run measured, for its assertions and its reliability record."""

    name: str
    guarantee: str
    events_sent: int
    report: VerifyReport
    applied: int
    faults_injected: int
    recovery_s: dict[str, float] = field(default_factory=dict)
    events_doubled: int = 0
    doubled_bound: int = 0
    notes: str = ""

    @property
    def events_lost(self) -> int:
        return max(0, self.events_sent - self.applied)

    def record(self) -> Path:
        return write_record({
            "name": self.name, "kind": "fault", "guarantee": self.guarantee, "faults_injected": self.faults_injected,
            "events_sent": self.events_sent, "events_lost": self.events_lost, "events_doubled": self.events_doubled,
            "doubled_bound": self.doubled_bound, "recovery_s": {k: round(v, 2) for k, v in self.recovery_s.items()},
            "verified": self.report.ok, "notes": self.notes,
        })


async def exact(settings: Any, wait_s: float = 30.0) -> VerifyReport:
    """features/verify.py's full comparison of every user, item and global shard."""
    return await verify(settings, wait_s=wait_s)
