"""How the agents read their topics: in batches, exactly once where asked, and how far behind.

``consume_in_batches`` drives each agent (stream/app.py): it drops the messages of
partitions revoked meanwhile and, under exactly_once, hands each input partition's part
of a batch to the processor inside that partition's transaction (stream/transport.py),
under ``app.commit_gate``. ``consumer_lag`` is the lag the metrics report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import faust

from streamrec.stream.transport import kafka_producer, send_lingering, transaction_of

if TYPE_CHECKING:
    from streamrec.stream.app import StreamrecApp
    from streamrec.stream.transport import _TunedConsumer


async def consume_in_batches(
    app: StreamrecApp, stream: faust.StreamT, take: dict[str, Any],
    handle: Callable[[Sequence[tuple[Any, int, int]]], Awaitable[None]],
) -> None:
    """Feed ``stream`` to ``handle`` in batches of (event, partition, offset). Under
    exactly_once, one call per input partition, whose outputs go in that partition's
    transaction (stream/transport.py), and each batch handled and acked inside
    ``app.commit_gate``. A handled batch's outputs leave at once, not after the
    producer's linger (stream/transport.py, ``send_lingering``)."""
    consumer = cast("_TunedConsumer", app.consumer)  # the worker's transport (stream/transport.py)
    async for taken in cast(faust.Stream, stream).take_events(**take):  # Faust's Stream has it, its StreamT not
        # a message of a partition revoked meanwhile belongs to its new owner (our state of it is gone)
        assigned = consumer.assignment()
        events = [e for e in taken if e.message.tp in assigned]
        if len(events) < len(taken):
            consumer.hold(e.message for e in taken if e.message.tp not in assigned)
            if app.processor is not None:
                app.processor.metrics.count("skipped_revoked", len(taken) - len(events))
        in_order = consumer.in_order(events)  # no record applied past one that never arrived
        if len(in_order) < len(events) and app.processor is not None:
            app.processor.metrics.count("held_out_of_order", len(events) - len(in_order))
        events = in_order
        if not events:
            continue
        if not app.in_transaction:
            await handle([(e, e.message.partition, e.message.offset) for e in events])
            send_lingering(kafka_producer(app))
            continue
        async with app.commit_gate:  # each input partition's part in its own transaction
            for (topic, partition), part in _by_source(events).items():
                with transaction_of(topic, partition):
                    await handle([(e, partition, e.message.offset) for e in part])
            await ack_all(stream, events)


def _by_source(events: Sequence[Any]) -> dict[tuple[str, int], list[Any]]:
    parts: dict[tuple[str, int], list[Any]] = {}
    for event in events:
        parts.setdefault((event.message.topic, event.message.partition), []).append(event)
    return parts


async def ack_all(stream: faust.StreamT, events: Sequence[Any]) -> None:
    """Ack a batch inside the commit gate (take_events acks it again afterwards: a no-op)."""
    for event in events:
        await stream.ack(event)


def consumer_lag(app: StreamrecApp) -> dict[str, int]:
    """Messages not yet read, per input topic, summed over this worker's partitions.

    highwater − (last read offset + 1), exact on Apache Kafka.
    """
    consumer = cast("_TunedConsumer", app.consumer)  # Faust's Consumer (its ConsumerT has no _read_offset)
    lag: dict[str, int] = {}
    try:
        assigned = consumer.assignment()
    except Exception:  # not yet assigned (starting, rebalancing)
        return lag
    for tp in assigned:
        if tp.topic.endswith("-changelog"):
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            continue
        read = consumer._read_offset.get(tp)
        if highwater is None:
            continue
        behind = highwater - (read + 1 if read is not None else 0)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, behind)
    return lag


__all__ = ["ack_all", "consume_in_batches", "consumer_lag"]
