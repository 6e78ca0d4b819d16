"""``ensure_topics`` creates, before a worker starts, every topic the worker's Faust app
would create at start-up, under the names Faust gives them (stream/topics.py)."""

from __future__ import annotations

import pytest

from streamrec.stream.settings import load_settings
from streamrec.stream.topics import STATE_TABLES, changelog_names, ensure_topics, faust_app_id, leader_topic_name


@pytest.mark.parametrize("role", ["all", "features", "recommend"])
def test_the_names_are_the_ones_faust_gives_its_topics(role: str) -> None:
    import faust

    settings = load_settings(worker={"app_id": "shop", "role": role})
    app = faust.App(faust_app_id(settings), broker="kafka://127.0.0.1:1", store="memory://")
    tables = [app.Table(name, partitions=4) for name in STATE_TABLES.values()]
    expected = [table.changelog_topic.get_topic_name() for table in tables] if role != "recommend" else []
    assert changelog_names(settings) == expected
    assert leader_topic_name(settings) == app._leader_assignor._leader_topic_name
    assert faust_app_id(settings) == ("shop" if role == "all" else f"shop-{role}")


@pytest.mark.integration
async def test_ensure_topics_creates_the_compacted_changelogs_and_the_leader_topic(bootstrap_servers: str) -> None:
    import uuid

    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    run = f"topics-{uuid.uuid4().hex[:8]}"
    settings = load_settings(broker={"bootstrap_servers": bootstrap_servers, "partitions": 3}, worker={"app_id": run},
                             topics={n: f"{run}.{n}" for n in ("clickstream", "dlq", "by_item", "recommendations",
                                                                "metrics", "to_recommend")})
    partitions = await ensure_topics(settings)
    assert all(partitions[name] == 3 for name in changelog_names(settings))
    assert partitions[leader_topic_name(settings)] == 1
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in changelog_names(settings)])
    finally:
        await admin.close()
    policies = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
                for response in responses for resource in response.resources}
    assert policies == {name: "compact" for name in changelog_names(settings)}
    assert await ensure_topics(settings) == partitions  # a second call changes nothing
