"""Create streamrec's topics up front, with the configured partition count.

Kafka auto-creates a topic on first use with the broker's default
partition count; a producer that writes before the worker has declared its topics
would then fix the wrong count for good, and Faust refuses a changelog whose
partitions differ from its source topic. So the worker, the replay tool and the
tests call ``ensure_topics`` first. It is idempotent and verifies existing topics.

It also creates the topics Faust would create at start-up (the state tables' compacted
changelogs, the assignor's leader topic), so they are in the broker's metadata before the
worker's consumer subscribes: one Faust created a moment before its first assignment could
be missing from that metadata, and Faust's assignor then leaves it out ("Ignoring missing
topic") until a later rebalance. A worker whose item_state changelog was left out applied
nothing more to items for minutes (the fault tests, on a loaded machine).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streamrec.infra.kafka_clients import client_options
from streamrec.stream.settings import Settings


class TopicMismatch(RuntimeError):
    pass


# The processor's state tables (stream/processor.py): attribute → Faust table name.
STATE_TABLES = {"users": "user_state", "shards": "global_shard", "items": "item_state"}


def faust_app_id(settings: Settings) -> str:
    """The Faust app id, which is also the consumer group: one per worker role."""
    w = settings.worker
    return w.app_id if w.role == "all" else f"{w.app_id}-{w.role}"


def topic_names(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.clickstream, t.dlq, t.by_item, t.recommendations, t.metrics, t.to_recommend]


def changelog_names(settings: Settings) -> list[str]:
    """The state tables' changelogs as Faust names them; none for the recommend role."""
    if settings.worker.role == "recommend":
        return []
    return [f"{faust_app_id(settings)}-{table}-changelog" for table in STATE_TABLES.values()]


def leader_topic_name(settings: Settings) -> str:
    return f"{faust_app_id(settings)}-__assignor-__leader"  # Faust's LeaderAssignor


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15.0) -> dict[str, int]:
    """Topic → partition count, once the broker's metadata shows partitions for every topic
    (a topic created a moment ago can still be listed with none)."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        partitions = {d["topic"]: len(d["partitions"]) for d in described}
        if all(partitions.get(name) for name in names) or time.monotonic() > deadline:
            return partitions
        await asyncio.sleep(0.1)


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; returns name → partitions. Raises TopicMismatch naming the setting."""
    b = settings.broker
    admin = AIOKafkaAdminClient(**client_options(b))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        compacted = {"cleanup.policy": "compact"}  # what Faust asks for a table's changelog
        topics = [NewTopic(name, b.partitions, b.replication_factor) for name in topic_names(settings)]
        topics += [NewTopic(name, b.partitions, b.replication_factor, topic_configs=compacted)
                   for name in changelog_names(settings)]
        topics.append(NewTopic(leader_topic_name(settings), 1, b.replication_factor))
        wanted = [topic for topic in topics if topic.name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process won the race; verified below
        partitions = await _partition_counts(admin, [topic.name for topic in topics])
    finally:
        await admin.close()
    # clickstream and the repartition topic feed changelogged tables: their counts must match the setting
    for name in (settings.topics.clickstream, settings.topics.by_item, *changelog_names(settings)):
        if partitions.get(name) != b.partitions:
            raise TopicMismatch(
                f"topic {name!r} has {partitions.get(name)} partitions but STREAMREC_BROKER__PARTITIONS is {b.partitions}; "
                "set the setting to match, or recreate the topic"
            )
    return partitions
