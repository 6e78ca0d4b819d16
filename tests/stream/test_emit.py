"""The emit stage on fakes: one Recommendation per ranked request, keyed by user, with its
stage latencies; then the lists and the stale users' versions to the cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from streamrec.features.messages import Recommendation, RecommendedItem
from streamrec.features.user_state import UserState
from streamrec.stream.emit import Emitter
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.recommend import Ranked, RecommendRequest
from tests.stream.test_processor_accounting import T0, RecordingSink, _event


class RecordingCache:
    def __init__(self) -> None:
        self.updates: list[tuple[list[Any], Mapping[str, int] | None]] = []

    async def update(self, lists: Sequence[tuple[str, int, bytes]], stale: Mapping[str, int] | None = None) -> None:
        self.updates.append((list(lists), stale))


def _request(user: str, n: int = 0, covers: tuple[str, ...] = ()) -> RecommendRequest:
    return RecommendRequest(user, UserState(), _event(n, T0).model_copy(update={"user_id": user}), covers)


RANKED = Ranked([RecommendedItem(item_id="i1", score=0.5, source="popular")], {"candidates": 1.0, "scoring": 2.0})


async def test_each_list_goes_out_keyed_by_its_user_with_its_stage_latencies() -> None:
    sink, metrics = RecordingSink(), WorkerMetrics("w1")
    emitter = Emitter(sink, None, metrics, worker_id="w1")
    batch_began = T0.timestamp() + 0.5
    await emitter.emit([_request("u1", covers=("e9",))], [RANKED], model_version="m3", total_ms=4.0,
                       rank_began=batch_began + 0.25, batch_began=batch_began)
    [sent] = sink.sent
    message = Recommendation.model_validate_json(sent["value"])
    assert sent["key"] == b"u1" and (message.model_version, message.worker_id, message.covers) == ("m3", "w1", ["e9"])
    assert message.items == RANKED.items and message.cause_event_id == "e0" and message.event_ts == T0
    latency = message.latency_ms
    assert (latency.candidates, latency.scoring, latency.total, latency.ingest, latency.update) == (1.0, 2.0, 4.0, 500.0, 250.0)
    assert message.emitted_at - T0 > timedelta(0) and latency.event_to_emit is not None and latency.event_to_emit > 0


async def test_a_list_the_debounce_released_has_no_ingest_or_update_time() -> None:
    sink = RecordingSink()
    await Emitter(sink, None, WorkerMetrics("w"), worker_id="w").emit(
        [_request("u1")], [RANKED], model_version="m", total_ms=1.0, rank_began=T0.timestamp())
    latency = Recommendation.model_validate_json(sink.sent[0]["value"]).latency_ms
    assert (latency.ingest, latency.update) == (None, None)


async def test_the_lists_and_the_stale_users_go_to_the_cache_after_the_sends() -> None:
    sink, cache = RecordingSink(), RecordingCache()
    emitter = Emitter(sink, cache, WorkerMetrics("w"), worker_id="w")
    await emitter.emit([_request("u1"), _request("u2")], [RANKED, RANKED], model_version="m", total_ms=1.0,
                       rank_began=0.0, stale={"u1": 3, "u3": 5})
    [(lists, stale)] = cache.updates
    assert [(user, version, payload) for user, version, payload in lists] == [
        ("u1", 0, sink.sent[0]["value"]), ("u2", 0, sink.sent[1]["value"])]
    assert stale == {"u1": 3, "u3": 5}
    await emitter.invalidate({})  # nothing stale: no round trip
    await emitter.invalidate({"u4": 1})
    assert cache.updates[1:] == [([], {"u4": 1})]
