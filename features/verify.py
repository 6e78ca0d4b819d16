"""``streamrec verify``: the online store against a recomputation from ``clickstream``.

The invariant the worker keeps: every consumed event is applied once or refused into
the DLQ (an invalid payload, or a valid event refused as ``late``); a redelivered
record or a re-sent event id changes nothing. So from the topics alone, each
distinct valid event (by ``event_id``) that has a record not dead-lettered as
``late`` counts once for its user and, unless it is a search, for its item (a record
on another partition than its user's counts through the copy the worker sends to that
partition, features/routing.py; a record not keyed by its user is invalid). The
online rows must hold exactly those counts per type, ``event_count`` and the mean
rating (to float rounding), the global shards their sums, and every invalid record
must be in the DLQ.

The recomputation is direct (counts and sums over the topic), not the worker's
update functions, so a bug in those cannot hide itself here.

Run it once the worker has caught up; ``wait_s`` retries while the worker still
applies its backlog (which reads as mismatches) and gives up once that long passes
without progress. A client that
re-sends an event after its id left the window (``dedup_max_ids`` newer events)
shows up as a count one too high: that is a real double count.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from streamrec.features.global_state import shard_id
from streamrec.features.messages import EVENT_TYPES, ClickEvent, DeadLetter, EventType, parse_record
from streamrec.features.online import FeatureDict, RedisFeatureStore
from streamrec.features.routing import user_partition
from streamrec.features.schema import GLOBAL_VIEW, ITEM_VIEW, USER_VIEW, FeatureValue, count_feature

RecordPosition = tuple[int, int]  # (partition, offset) on clickstream
COUNT_FEATURES = tuple(count_feature(t) for t in EVENT_TYPES)
CHECKED = (*COUNT_FEATURES, "event_count", "rating_mean")
READ_CHUNK = 5000
MAX_LISTED = 50  # mismatches listed in a report; all are counted


@dataclass(frozen=True)
class Record:
    """One consumed ``clickstream`` record (``key`` ``None``: it had none)."""

    partition: int
    offset: int
    payload: bytes
    key: bytes | None = None


@dataclass
class Tally:
    """Counts per event type and the rating sum of one entity's applied events."""

    counts: Counter[str] = field(default_factory=Counter)
    rating_sum: float = 0.0
    ratings: int = 0

    def add(self, event: ClickEvent) -> None:
        self.counts[event.type.value] += 1
        if event.rating is not None:
            self.rating_sum += event.rating
            self.ratings += 1

    def features(self) -> dict[str, FeatureValue]:
        """What the online row must hold (the names of :data:`CHECKED`)."""
        values: dict[str, FeatureValue] = {count_feature(t): self.counts[t] for t in EVENT_TYPES}
        values["event_count"] = sum(self.counts.values())
        values["rating_mean"] = self.rating_sum / self.ratings if self.ratings else 0.0
        return values


@dataclass
class Expected:
    """The recomputation: per user, per item, in all; and what the records held."""

    users: dict[str, Tally] = field(default_factory=dict)
    items: dict[str, Tally] = field(default_factory=dict)
    total: Tally = field(default_factory=Tally)
    partitions: set[int] = field(default_factory=set)
    records: int = 0
    late: int = 0  # records dead-lettered as late
    repeated: int = 0  # records of an event id seen before (redelivered or re-sent)
    routed: int = 0  # records on another partition than their user's: the worker copies them there
    invalid: list[RecordPosition] = field(default_factory=list)


def recompute(records: Iterable[Record], late: set[RecordPosition], *, max_bytes: int,
              allow_unknown_fields: bool = False, partitions: int | None = None) -> Expected:
    """What the online store must hold after ``records``, given the ``late`` ones.

    Records are parsed as the worker parses them (payload and key). An event id counts
    once, if any of its records was not refused as late. With ``partitions`` (the
    topic's), a valid record on another partition than its user's counts only through
    the copy the worker sends to that partition (features/routing.py).
    """
    out = Expected()
    counted: set[str] = set()
    for record in records:
        out.records += 1
        parsed = parse_record(record.key, record.payload, max_bytes=max_bytes, allow_unknown_fields=allow_unknown_fields)
        if not isinstance(parsed, ClickEvent):
            out.invalid.append((record.partition, record.offset))
            continue
        if partitions is not None and user_partition(parsed.user_id, partitions) != record.partition:
            out.routed += 1
            continue
        if (record.partition, record.offset) in late:
            out.late += 1
            continue
        if parsed.event_id in counted:
            out.repeated += 1
            continue
        counted.add(parsed.event_id)
        out.partitions.add(record.partition)
        _count(out, parsed)
    return out


def _count(out: Expected, event: ClickEvent) -> None:
    out.users.setdefault(event.user_id, Tally()).add(event)
    out.total.add(event)
    if event.item_id is not None and event.type is not EventType.SEARCH:
        out.items.setdefault(event.item_id, Tally()).add(event)


def compare(kind: str, expected: dict[str, Tally], online: Sequence[FeatureDict]) -> list[str]:
    """One line per (entity, feature) whose online value differs from the recomputation;
    ``online`` holds the rows of ``expected``'s entities, in its order."""
    out: list[str] = []
    for (entity, tally), row in zip(expected.items(), online, strict=True):
        out.extend(f"{kind} {entity}: {line}" for line in _row_mismatches(tally.features(), row))
    return out


def compare_total(total: Tally, shards: Sequence[FeatureDict]) -> list[str]:
    """The global shards' counts, added up, against every applied event."""
    want = total.features()
    out: list[str] = []
    for name in (*COUNT_FEATURES, "event_count"):
        have = sum(_as_int(shard[name]) for shard in shards)
        if have != want[name]:
            out.append(f"global {name}: online={have} expected={want[name]}")
    return out


def _as_int(value: FeatureValue | None) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def _row_mismatches(want: dict[str, FeatureValue], row: FeatureDict) -> list[str]:
    if all(row.get(name) is None for name in CHECKED):
        return ["no online row"]
    out = []
    for name in CHECKED:
        have, expected = row.get(name), want[name]
        same = (have is not None and math.isclose(float(have), float(expected), rel_tol=1e-9, abs_tol=1e-9)  # type: ignore[arg-type]
                if name == "rating_mean" else have == expected)
        if not same:
            out.append(f"{name} online={have!r} expected={expected!r}")
    return out


def dead_lettered(letters: Iterable[bytes], source_topic: str) -> tuple[set[RecordPosition], set[RecordPosition]]:
    """The (partition, offset) of every ``source_topic`` record in the DLQ, and of those
    refused as ``late``. Unreadable letters are passed over."""
    every, late = set(), set()
    for raw in letters:
        try:
            letter = DeadLetter.model_validate_json(raw)
        except ValidationError:
            continue
        if letter.source_topic != source_topic or letter.partition is None or letter.offset is None:
            continue
        every.add((letter.partition, letter.offset))
        if letter.reason == "late":
            late.add((letter.partition, letter.offset))
    return every, late


@dataclass
class VerifyReport:
    ok: bool
    records: int
    events_applied: int
    repeated: int
    late: int
    invalid: int
    users: int
    items: int
    mismatch_count: int
    mismatches: list[str]
    seconds: float
    routed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"FAILED: {self.mismatch_count} mismatches"
        return (f"verify {verdict}: {self.records} records, {self.events_applied} distinct events applied "
                f"({self.users} users, {self.items} items), {self.repeated} repeated, {self.late} late, "
                f"{self.invalid} invalid, {self.routed} routed to their user's partition, in {self.seconds:.1f} s")


def check(expected: Expected, dlq: set[RecordPosition], users: Sequence[FeatureDict], items: Sequence[FeatureDict],
          shards: Sequence[FeatureDict]) -> list[str]:
    """Every mismatch between the recomputation and what was read (pure)."""
    missing = [f"record {p}:{o} is invalid but not in the DLQ" for p, o in expected.invalid if (p, o) not in dlq]
    return [*missing, *compare("user", expected.users, users), *compare("item", expected.items, items),
            *compare_total(expected.total, shards)]


async def verify(settings: Any, *, wait_s: float = 0.0, idle_s: float = 2.0) -> VerifyReport:
    """Read ``clickstream`` and the DLQ from the beginning and the online rows; compare.

    Retries (DLQ and online rows) until they match, or until ``wait_s`` seconds pass
    without the number of mismatches going down (a worker still catching up makes
    progress; one that lost events does not).
    """
    began = time.monotonic()
    records = await _read(settings, settings.topics.clickstream, idle_s)
    clicks = [Record(r.partition, r.offset, r.value or b"", r.key) for r in records]
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    fewest, progressed = math.inf, time.monotonic()
    try:
        while True:
            letters = [r.value or b"" for r in await _read(settings, settings.topics.dlq, idle_s)]
            dlq, late = dead_lettered(letters, settings.topics.clickstream)
            expected = recompute(clicks, late, max_bytes=settings.worker.max_event_bytes,
                                 allow_unknown_fields=settings.worker.allow_unknown_fields,
                                 partitions=settings.broker.partitions)
            mismatches = check(expected, dlq, *await _online(store, expected))
            if len(mismatches) < fewest:
                fewest, progressed = len(mismatches), time.monotonic()
            if not mismatches or time.monotonic() - progressed >= wait_s:
                break
            await asyncio.sleep(1.0)
    finally:
        await store.close()
    return _report(expected, mismatches, time.monotonic() - began)


def _report(expected: Expected, mismatches: list[str], seconds: float) -> VerifyReport:
    return VerifyReport(
        ok=not mismatches, records=expected.records, events_applied=sum(expected.total.counts.values()),
        repeated=expected.repeated, late=expected.late, invalid=len(expected.invalid),
        users=len(expected.users), items=len(expected.items), mismatch_count=len(mismatches),
        mismatches=mismatches[:MAX_LISTED], seconds=round(seconds, 2), routed=expected.routed,
    )


async def _read(settings: Any, topic: str, idle_s: float) -> list[Any]:
    from streamrec.features.export import read_topic
    from streamrec.infra.kafka_clients import consumer

    client = consumer(settings.broker, topic, auto_offset_reset="earliest")
    await client.start()
    try:
        return await read_topic(client, idle_s=idle_s)
    finally:
        await client.stop()


async def _online(store: RedisFeatureStore, expected: Expected) -> tuple[list[FeatureDict], ...]:
    shards = [shard_id(p) for p in sorted(expected.partitions)]
    return (await _rows(store, USER_VIEW, list(expected.users)), await _rows(store, ITEM_VIEW, list(expected.items)),
            await _rows(store, GLOBAL_VIEW, shards))


async def _rows(store: RedisFeatureStore, view: str, ids: list[str]) -> list[FeatureDict]:
    out: list[FeatureDict] = []
    for start in range(0, len(ids), READ_CHUNK):
        out.extend(await store.read_batch(view, ids[start : start + READ_CHUNK], CHECKED))
    return out


async def bench_check(settings: Any, *, wait_s: float = 60.0) -> dict[str, Any]:
    """How every benchmark ends: verify, print the verdict (and the first mismatches),
    return the report as a dict for the benchmark's JSON."""
    report = await verify(settings, wait_s=wait_s)
    print(f"[bench] {report.summary()}", flush=True)
    for line in report.mismatches[:10]:
        print(f"[bench]   {line}", flush=True)
    return report.to_dict()
