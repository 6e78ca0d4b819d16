"""The recommend stage on fakes: one list per user per batch, the debounce's hold and
release, scoring errors counted; the features role's hand-over and its receiving end."""

from __future__ import annotations

from collections.abc import Sequence

from streamrec.features.messages import RecommendTask
from streamrec.stream.debounce import Debouncer
from streamrec.stream.emit import Emitter
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.recommend import Ranked, RecommendRequest
from streamrec.stream.recommend_stage import HandOver, RecommendStage, received_tasks
from tests.stream.test_emit import RANKED, RecordingCache, _request
from tests.stream.test_processor_accounting import Message, RecordingSink


class RecordingRecommender:
    model_version = "m1"
    provider = "cpu"
    scoring_errors = 0

    def __init__(self) -> None:
        self.batches: list[list[RecommendRequest]] = []

    async def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Ranked]:
        self.batches.append(list(requests))
        return [RANKED for _ in requests]


def _stage(debounce_s: float = 0.0) -> tuple[RecommendStage, RecordingRecommender, RecordingSink, RecordingCache, WorkerMetrics]:
    recommender, sink, cache, metrics = RecordingRecommender(), RecordingSink(), RecordingCache(), WorkerMetrics("w")
    emitter = Emitter(sink, cache, metrics, worker_id="w")
    return RecommendStage(recommender, Debouncer(debounce_s), emitter, metrics), recommender, sink, cache, metrics


async def test_a_batch_ranks_one_request_per_user_the_last_covering_the_earlier() -> None:
    stage, recommender, sink, _, metrics = _stage()
    await stage.offer([_request("u1", 0), _request("u2", 1), _request("u1", 2)], stale={"u1": 2, "u2": 1})
    [batch] = recommender.batches
    assert [(r.user_id, r.cause.event_id, r.covers) for r in batch] == [("u2", "e1", ()), ("u1", "e2", ("e0",))]
    assert [s["key"] for s in sink.sent] == [b"u2", b"u1"]
    assert (metrics.total_counts["coalesced"], metrics.total_counts["recommendations"]) == (1, 2)


async def test_the_debounce_holds_a_users_next_request_and_releases_it_covering_the_one_it_replaced() -> None:
    stage, recommender, _, cache, metrics = _stage(debounce_s=3600)
    await stage.offer([_request("u1", 0)])
    await stage.offer([_request("u1", 1)], stale={"u1": 2})
    await stage.offer([_request("u1", 2)], stale={"u1": 3})
    assert len(recommender.batches) == 1 and metrics.total_counts["debounced"] == 2
    assert cache.updates[-1] == ([], {"u1": 3})  # held, not ranked: the cached list is stale
    stage.debouncer.window_s = 0.0  # the window ends
    await stage.release_due()
    [released] = recommender.batches[1]
    assert (released.cause.event_id, released.covers) == ("e2", ("e1",))


async def test_the_recommenders_new_failures_are_counted_once() -> None:
    stage, recommender, _, _, metrics = _stage()
    recommender.scoring_errors = 2
    await stage.rank([_request("u1")])
    await stage.rank([_request("u1")])
    assert metrics.total_counts["scoring_errors"] == 2


async def test_a_hand_over_sends_one_task_per_user_that_the_recommend_role_reads_back() -> None:
    sink, metrics = RecordingSink(), WorkerMetrics("w")
    await HandOver(sink, metrics).send([_request("u1", 0), _request("u1", 1)])
    [sent] = sink.sent
    task = RecommendTask.model_validate_json(sent["value"])
    assert (sent["key"], task.cause.event_id, task.covers) == (b"u1", "e1", ["e0"])
    assert (metrics.total_counts["coalesced"], metrics.total_counts["handed_over"]) == (1, 1)
    [request] = received_tasks([Message(sent["key"], sent["value"])], metrics)
    assert (request.user_id, request.cause, request.covers) == ("u1", task.cause, ("e0",))
    assert request.state.to_dict() == task.state
    assert int(metrics.total_hist["handover"].counts.sum()) == 1
