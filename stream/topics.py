"""Create streamrec's topics up front, with the configured partition count.

Kafka (and Tansu) auto-create a topic on first use with the broker's default
partition count; a producer that writes before the worker has declared its topics
would then fix the wrong count for good, and Faust refuses a changelog whose
partitions differ from its source topic. So the worker, the replay tool and the
tests call ``ensure_topics`` first. It is idempotent and verifies existing topics.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from stream.kafka import client_options
from stream.settings import Settings


class TopicMismatch(RuntimeError):
    pass


def topic_names(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.clickstream, t.dlq, t.by_item, t.recommendations, t.metrics, t.control, t.to_recommend]


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create missing topics; returns name → partitions. Raises TopicMismatch naming the setting."""
    b = settings.broker
    admin = AIOKafkaAdminClient(**client_options(b))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, b.partitions, b.replication_factor) for name in topic_names(settings) if name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process won the race; verified below
        described = await admin.describe_topics(topic_names(settings))
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    # clickstream and the repartition topic feed changelogged tables: their counts must match the setting
    for name in (settings.topics.clickstream, settings.topics.by_item):
        if partitions.get(name) != b.partitions:
            raise TopicMismatch(
                f"topic {name!r} has {partitions.get(name)} partitions but STREAMREC_BROKER__PARTITIONS is {b.partitions}; "
                "set the setting to match, or recreate the topic"
            )
    return partitions
