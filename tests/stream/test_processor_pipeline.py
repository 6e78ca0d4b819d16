"""The processor runs a batch through the stages in order, on fakes: a triggering event is
ranked here and its list emitted (roles all, recommend), or handed over (the features role)."""

from __future__ import annotations

from typing import Any

from streamrec.features.messages import ITEM_BATCH, ClickEvent, EventType, Recommendation, RecommendTask
from streamrec.stream.clients import Clients
from streamrec.stream.processor import EventProcessor
from streamrec.stream.settings import load_settings
from tests.stream.test_emit import RecordingCache
from tests.stream.test_processor_accounting import T0, FakeTable, Message, RecordingSink, RecordingWriter
from tests.stream.test_recommend_stage import RecordingRecommender


def _processor(role: str, **sinks: Any) -> tuple[EventProcessor, RecordingCache]:
    settings = load_settings(worker={"role": role}, recommend={"trigger_types": ["click"], "debounce_ms": 0})
    cache = RecordingCache()
    recommender = RecordingRecommender() if role != "features" else None
    tables = {name: FakeTable() for name in ("users", "shards", "items")}
    defaults = {name: RecordingSink() for name in ("dlq", "by_item", "recommendations")}
    return EventProcessor(settings, **tables, **{**defaults, **sinks},
                          clients=Clients(writer=RecordingWriter(), cache=cache, recommender=recommender)), cache


def _clicks(n: int) -> list[tuple[Message, int, int]]:
    return [(Message(b"u1", ClickEvent(event_id=f"e{k}", user_id="u1", item_id=f"i{k}", type=EventType.CLICK,
                                       ts=T0).to_bytes()), 0, k) for k in range(n)]


async def test_a_batch_goes_through_ingest_user_side_item_side_recommend_and_emit() -> None:
    by_item, lists = RecordingSink(), RecordingSink()
    processor, cache = _processor("all", by_item=by_item, recommendations=lists)
    await processor.on_clickstream(_clicks(2) + [(Message(b"u1", b"{"), 0, 2)])
    assert [m.msg_id for s in by_item.sent for m in ITEM_BATCH.validate_json(s["value"])] == ["e0", "e1"]
    [sent] = lists.sent
    message = Recommendation.model_validate_json(sent["value"])
    assert (message.cause_event_id, message.covers) == ("e1", ["e0"])
    assert cache.updates == [([("u1", 2, sent["value"])], {"u1": 2})]
    counts = processor.metrics.total_counts
    assert (counts["events_in"], counts["events_valid"], counts["dlq"], counts["recommendations"]) == (3, 2, 1, 1)


async def test_the_features_role_drops_the_cached_list_and_hands_the_request_over() -> None:
    handed = RecordingSink()
    processor, cache = _processor("features", to_recommend=handed)
    await processor.on_clickstream(_clicks(2))
    [sent] = handed.sent
    assert RecommendTask.model_validate_json(sent["value"]).covers == ["e0"]
    assert cache.updates == [([], {"u1": 2})]
    assert processor.stages.recommend is None


async def test_the_recommend_role_ranks_what_was_handed_over() -> None:
    handed, lists = RecordingSink(), RecordingSink()
    features, _ = _processor("features", to_recommend=handed)
    recommend, _ = _processor("recommend", recommendations=lists)
    await features.on_clickstream(_clicks(1))
    await recommend.on_recommend_tasks([Message(b"u1", handed.sent[0]["value"])])
    assert Recommendation.model_validate_json(lists.sent[0]["value"]).cause_event_id == "e0"
