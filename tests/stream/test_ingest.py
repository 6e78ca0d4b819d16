"""The ingest stage on fakes: valid events through, refused records to the DLQ with their
reason, a record on another partition than its user's copied home."""

from __future__ import annotations

from streamrec.features.messages import DeadLetter
from streamrec.features.routing import routed_from, routed_header, user_partition
from streamrec.stream.ingest import DeadLetters, Ingest
from streamrec.stream.metrics import WorkerMetrics
from tests.stream.test_processor_accounting import T0, Message, RecordingSink, _event
from tests.stream.test_routing import Record, RoutingRecorder


def _ingest(reroute: RoutingRecorder | None = None, partitions: int = 4) -> tuple[Ingest, RecordingSink, WorkerMetrics]:
    dlq, metrics = RecordingSink(), WorkerMetrics("w")
    ingest = Ingest(DeadLetters(dlq, "clickstream", metrics), reroute, metrics, partitions=partitions,
                    max_event_bytes=4096, allow_unknown_fields=False)
    return ingest, dlq, metrics


async def test_valid_events_are_admitted_in_order_with_where_they_were_read() -> None:
    ingest, dlq, _ = _ingest()
    events = [_event(n, T0) for n in range(3)]
    admitted = await ingest.admit([(Message(b"u1", e.to_bytes()), 2, 10 + n) for n, e in enumerate(events)])
    assert [(a.event, a.partition, a.offset, a.origin) for a in admitted] == [(e, 2, 10 + n, None) for n, e in enumerate(events)]
    assert dlq.sent == []


async def test_a_refused_record_goes_to_the_dlq_whole_with_its_reason() -> None:
    ingest, dlq, metrics = _ingest()
    good = _event(0, T0)
    admitted = await ingest.admit([(Message(b"u1", b"{not json"), 0, 5), (Message(b"u2", good.to_bytes()), 0, 6)])
    assert admitted == []  # the second is keyed u2 but is u1's event
    letters = [DeadLetter.model_validate_json(s["value"]) for s in dlq.sent]
    assert [(letter.reason, letter.source_topic, letter.offset) for letter in letters] == [
        ("invalid_json", "clickstream", 5), ("key_mismatch", "clickstream", 6)]
    assert letters[0].raw_payload() == b"{not json" and dlq.sent[0]["key"] == b"u1"
    assert (metrics.total_counts["dlq"], metrics.total_counts["dlq_invalid_json"]) == (2, 1)


async def test_a_record_on_another_partition_than_its_users_is_sent_home_not_admitted() -> None:
    reroute = RoutingRecorder()
    ingest, _, metrics = _ingest(reroute)
    home = user_partition("u1", 4)
    record = Message(b"u1", _event(0, T0).to_bytes())
    assert await ingest.admit([(record, (home + 1) % 4, 7)]) == []
    [sent] = reroute.sent
    assert (sent["partition"], sent["value"], routed_from(sent["headers"])) == (home, record.value, ((home + 1) % 4, 7))
    assert metrics.total_counts["routed"] == 1


async def test_without_a_reroute_every_record_is_admitted_where_it_is_and_a_copy_knows_its_origin() -> None:
    ingest, _, _ = _ingest(reroute=None)
    copy = Record(b"u1", _event(0, T0).to_bytes(), routed_header(3, 99))
    [admitted] = await ingest.admit([(copy, (user_partition("u1", 4) + 1) % 4, 1)])
    assert admitted.origin == (3, 99)
