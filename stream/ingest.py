"""Ingest, the pipeline's first stage: a ``clickstream`` batch in, its valid events out.

Each record is parsed and validated (features/messages.py); a refused one goes to the DLQ
whole, with its reason; one on another partition than its user's is copied to the user's
partition (features/routing.py) and applied there only. What is left is applied by the
user side (stream/user_side.py), which sends the events it refuses as too late to the
same DLQ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamrec.features.messages import ClickEvent, DeadLetter, Rejection, parse_record
from streamrec.features.routing import RoutingSink, routed_from, routed_header, user_partition
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.ports import Consumed, RawMessage, Sink


class DeadLetters:
    """The DLQ: a refused record's payload whole, with a machine-readable reason and where it
    was read. Counts ``dlq`` and ``dlq_<reason>``."""

    def __init__(self, sink: Sink, source_topic: str, metrics: WorkerMetrics) -> None:
        self.sink, self.source_topic, self.metrics = sink, source_topic, metrics

    async def send(self, message: RawMessage, rejection: Rejection, partition: int, offset: int) -> None:
        letter = DeadLetter.build(message.value or b"", rejection, source_topic=self.source_topic,
                                  partition=partition, offset=offset)
        await self.sink.send(key=message.key, value=letter.model_dump_json().encode())
        self.metrics.count("dlq")
        self.metrics.count(f"dlq_{rejection.reason}")


@dataclass(frozen=True)
class Admitted:
    """A valid event on its user's partition, with the record it came in."""

    message: RawMessage
    event: ClickEvent
    partition: int
    offset: int

    @property
    def origin(self) -> tuple[int, int] | None:
        """Where a copied record was first read (features/routing.py); None for an original."""
        return routed_from(getattr(self.message, "headers", None))


class Ingest:
    """Validate, dead-letter, route. ``reroute`` is ``clickstream`` itself; None applies
    every record where it is. ``max_event_bytes`` and ``allow_unknown_fields`` as in
    :func:`~streamrec.features.messages.parse_record`."""

    def __init__(self, dead_letters: DeadLetters, reroute: RoutingSink | None, metrics: WorkerMetrics, *,
                 partitions: int, max_event_bytes: int, allow_unknown_fields: bool) -> None:
        self.dead_letters, self.reroute, self.metrics = dead_letters, reroute, metrics
        self.partitions = partitions
        self.max_event_bytes, self.allow_unknown_fields = max_event_bytes, allow_unknown_fields

    async def admit(self, batch: Sequence[Consumed]) -> list[Admitted]:
        """The batch's valid events on their user's partition, in order; the others are in
        the DLQ (counted ``dlq``) or sent home (counted ``routed``) when this returns."""
        admitted = []
        for message, partition, offset in batch:
            parsed = parse_record(message.key, message.value or b"", max_bytes=self.max_event_bytes,
                                  allow_unknown_fields=self.allow_unknown_fields)
            if isinstance(parsed, Rejection):
                await self.dead_letters.send(message, parsed, partition, offset)
            elif self.reroute is not None and (home := user_partition(parsed.user_id, self.partitions)) != partition:
                await self.reroute.send(key=message.key, value=message.value, partition=home,
                                        headers=routed_header(partition, offset))
                self.metrics.count("routed")
            else:
                admitted.append(Admitted(message, parsed, partition, offset))
        return admitted
