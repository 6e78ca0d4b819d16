"""Faust's aiokafka transport with the consumer fetch wait as a setting.

faust-streaming 0.15.3 hard-codes ``fetch_max_wait_ms=1500`` when it builds the
worker's ``AIOKafkaConsumer``. Kafka answers a fetch as soon as any of its partitions
has data, but aiokafka keeps one fetch in flight per broker and leaves out of it the
partitions whose records still wait in its buffer; data that arrives for those waits
until the in-flight fetch returns, up to the full wait on a quiet topic. These subclasses
set the wait from ``Settings.broker.fetch_max_wait_ms`` without touching faust's files,
serve fetched partitions round-robin (no topic starves behind another's backlog),
and await ``app.before_commit()`` before each offset commit (write-behind state and
feature rows reach their changelogs and Redis before the offsets that produced them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka


class _TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its Fetcher, which happens later.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer

    async def _fetch_records(
        self, consumer: aiokafka.AIOKafkaConsumer, active_partitions: Any, timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # aiokafka hands out fetched records partition by partition in the order they were
        # fetched, up to max_records: a backlog on the clickstream kept the item topic's
        # records waiting for seconds. Partitions served now go to the back of the line.
        # (Runs on the consumer thread, which owns the fetcher's buffer.)
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout, max_records=max_records)
        to_back_of_line(consumer._fetcher._records, records)
        return records


def to_back_of_line(pending: dict[Any, Any], served: Iterable[Any]) -> None:
    """Move the ``served`` keys of ``pending`` (an insertion-ordered buffer) to its end."""
    for key in served:
        if key in pending:
            pending[key] = pending.pop(key)


class _TunedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _TunedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        # Write-behind state must reach its changelog before the offsets that produced it
        # are committed; Faust flushes the producer right before committing.
        before_commit = getattr(self.app, "before_commit", None)
        if before_commit is not None:
            await before_commit()
        return await super().force_commit(topics, start_new_transaction=start_new_transaction)


class TunedTransport(faust_aiokafka.Transport):
    """Drop-in aiokafka transport whose worker consumer uses ``app.fetch_max_wait_ms``."""

    Consumer = _TunedConsumer
