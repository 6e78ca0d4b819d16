"""Every consumed event is applied, a duplicate of an applied one, or in the DLQ.

The processor's clickstream path on fakes (no broker, no Redis): tables with a local
store and a changelog, sinks that record what is sent, a writer that records rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from streamrec.features.messages import ClickEvent, DeadLetter, EventType
from streamrec.features.schema import USER_VIEW, FeatureRow
from streamrec.stream.clients import Clients
from streamrec.stream.processor import EventProcessor
from streamrec.stream.settings import load_settings

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class FakeChangelogTopic:
    async def send(self, *, key: str, value: Any, partition: int, **options: Any) -> None:
        pass


class FakeTable:
    """A Faust table's touch points: its local store and its changelog (topic or send)."""

    key_serializer, value_serializer = "json", "raw"  # the local store holds JSON bytes

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.changelog_topic = FakeChangelogTopic()

    def send_changelog(self, partition: int, key: str, value: Any) -> None:
        pass


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None) -> None:
        self.sent.append({"key": key, "value": value, "partition": partition})


class RecordingWriter:
    def __init__(self) -> None:
        self.rows: list[FeatureRow] = []

    async def submit(self, rows: list[FeatureRow]) -> None:
        self.rows.extend(rows)

    async def flush(self) -> None:
        pass


@dataclass
class Message:
    key: bytes | None
    value: bytes


def _processor(recommender: Any = None, **features: Any) -> tuple[EventProcessor, RecordingSink, RecordingWriter]:
    settings = load_settings(recommend={"trigger_types": []}, features=features)
    dlq, writer = RecordingSink(), RecordingWriter()
    processor = EventProcessor(settings, users=FakeTable(), shards=FakeTable(), items=FakeTable(), dlq=dlq,
                               by_item=RecordingSink(), recommendations=RecordingSink(),
                               clients=Clients(writer=writer, recommender=recommender))
    return processor, dlq, writer


def _batch(events: list[ClickEvent], first_offset: int = 0, partition: int = 0) -> list[tuple[Message, int, int]]:
    return [(Message(e.user_id.encode(), e.to_bytes()), partition, first_offset + n) for n, e in enumerate(events)]


def _event(n: int, ts: datetime) -> ClickEvent:
    return ClickEvent(event_id=f"e{n}", user_id="u1", item_id=f"i{n % 5}", type=EventType.RATING, rating=3.0, ts=ts)


def _last_user_row(writer: RecordingWriter) -> FeatureRow:
    return [r for r in writer.rows if r.view == USER_VIEW][-1]


async def test_a_late_event_goes_to_the_dlq_with_reason_late() -> None:
    processor, dlq, writer = _processor(allowed_lateness_s=60)
    late = _event(1, T0 - timedelta(minutes=5))
    await processor.on_clickstream(_batch([_event(0, T0), late]))
    [sent] = dlq.sent
    letter = DeadLetter.model_validate_json(sent["value"])
    assert (letter.reason, letter.field, letter.partition, letter.offset) == ("late", "ts", 0, 1)
    assert letter.raw_payload() == late.to_bytes()
    assert "60 s" in letter.detail
    assert sent["key"] == b"u1"
    assert _last_user_row(writer).values["n_rating"] == 1
    assert processor.metrics.total_counts["dlq_late"] == 1


async def test_a_burst_in_one_millisecond_is_applied_whole_and_its_redelivery_changes_nothing() -> None:
    processor, dlq, writer = _processor()
    events = [_event(n, T0) for n in range(300)]
    await processor.on_clickstream(_batch(events))
    assert _last_user_row(writer).values["n_rating"] == 300
    rows_before = len(writer.rows)
    await processor.on_clickstream(_batch(events))  # the same records: a restart before the commit
    assert dlq.sent == []
    assert [r for r in writer.rows[rows_before:] if r.view == USER_VIEW] == []
    assert processor.metrics.total_counts["skipped_duplicate"] == 300


async def test_every_consumed_record_is_applied_a_duplicate_or_dead_lettered() -> None:
    processor, dlq, writer = _processor(allowed_lateness_s=60)
    events = [_event(n, T0 + timedelta(seconds=n % 3)) for n in range(200)]
    events += [_event(1000 + n, T0 - timedelta(hours=1)) for n in range(7)]  # late
    batch = _batch(events) + [(Message(b"u1", b"{not json"), 0, len(events))]
    await processor.on_clickstream(batch)
    counts = processor.metrics.total_counts
    assert counts["events_in"] == len(batch)
    assert counts["events_valid"] + counts["dlq"] + counts["skipped_duplicate"] == len(batch)
    assert (counts["events_valid"], counts["dlq_late"], counts["dlq_invalid_json"]) == (200, 7, 1)
    assert sorted(DeadLetter.model_validate_json(s["value"]).offset for s in dlq.sent) == list(range(200, 208))


class FailingModelRecommender:
    """Ranks nothing, and counts every batch as a model failure (as RankingRecommender does)."""

    model_version = "none"
    provider = "none"

    def __init__(self) -> None:
        self.scoring_errors = 0

    async def recommend_many(self, requests: list[Any]) -> list[Any]:
        from streamrec.stream.recommend import Ranked

        self.scoring_errors += 1
        return [Ranked([], {}) for _ in requests]


async def test_model_failures_are_exported_as_the_scoring_errors_counter() -> None:
    from prometheus_client import generate_latest

    from streamrec.features.user_state import UserState
    from streamrec.stream.prometheus import metrics_registry
    from streamrec.stream.recommend import RecommendRequest

    processor, _, _ = _processor(recommender=FailingModelRecommender())
    assert processor.stages.recommend is not None
    request = RecommendRequest("u1", UserState(), _event(0, T0))
    for _ in range(3):
        await processor.stages.recommend.rank([request])
    assert processor.metrics.total_counts["scoring_errors"] == 3
    text = generate_latest(metrics_registry(processor.metrics, process=False)).decode()
    assert 'streamrec_worker_count_total{name="scoring_errors",worker=' in text
    assert [line for line in text.splitlines() if 'name="scoring_errors"' in line][0].endswith(" 3.0")
