"""Ranking errors surface where they belong: a lost store stops the worker, a bad model
does not (the batch gets the heuristic list and ``scoring_errors`` counts it).

RankingRecommender on fakes: an online store whose feature read can fail, a scorer that can fail. No Redis, no trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import CandidateInputs, FeatureDict, OnlineFeatureStore, ReadRequest
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import UserState
from streamrec.models.candidates import CandidateConfig
from streamrec.models.scorer import ScoreBatch
from streamrec.models.serving import FeaturePlan, ServingBundle
from streamrec.stream.ranking import NO_MODEL, RankingRecommender
from streamrec.stream.recommend import RecommendRequest

POPULAR = [f"i{n}" for n in range(8)]


class FakeStore(OnlineFeatureStore):
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        pass

    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[FeatureDict]]:
        if self.error is not None:
            raise self.error
        return [[{f: 1.0 for f in r.features or []} for _ in r.entity_ids] for r in requests]

    async def candidate_inputs(self, items: Sequence[str], users: Sequence[str], popular_depth: int) -> CandidateInputs:
        return CandidateInputs(neighbours={}, popular=POPULAR[:popular_depth], seen={u: set() for u in users})

    async def close(self) -> None:
        pass


class FakeScorer:
    feature_names = ("item_features:rating_mean",)
    providers = ("CPUExecutionProvider",)
    variant = "fake"
    recent_items = 0  # reads no recent items (models/scorer.py)

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def score(self, batch: ScoreBatch) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return np.arange(len(batch.item_ids), dtype=np.float32)  # the last candidate scores best


class FakeWatcher:
    """Serves one bundle; never looks for another."""

    def __init__(self, bundle: ServingBundle) -> None:
        self.bundle = bundle

    def refresh_if_due(self) -> None:
        pass

    async def refresh(self) -> ServingBundle:
        return self.bundle

    async def close(self) -> None:
        pass


def _recommender(store: FakeStore, scorer: FakeScorer) -> RankingRecommender:
    bundle = ServingBundle(scorer, "v1", FeaturePlan(scorer.feature_names), None, None)  # type: ignore[arg-type]
    return RankingRecommender(store, FakeWatcher(bundle), CandidateConfig(max_candidates=8, popular_depth=8, ranker_weight=1.0),  # type: ignore[arg-type]
                              top_k=3)


def _request() -> RecommendRequest:
    cause = ClickEvent(event_id="e", user_id="u", item_id="x", type=EventType.VIEW, ts=datetime.now(timezone.utc))
    return RecommendRequest("u", UserState(), cause)


async def test_the_model_ranks_when_nothing_fails() -> None:
    rec = _recommender(FakeStore(), FakeScorer())
    [ranked] = await rec.recommend_many([_request()])
    assert [i.item_id for i in ranked.items] == ["i7", "i6", "i5"]
    assert (rec.model_version, rec.scoring_errors) == ("v1", 0)


async def test_a_redis_error_in_the_feature_read_is_raised() -> None:
    rec = _recommender(FakeStore(RedisConnectionError("lost")), FakeScorer())
    with pytest.raises(RedisConnectionError):
        await rec.recommend_many([_request()])
    assert rec.scoring_errors == 0


async def test_a_failing_model_falls_back_to_the_heuristic_and_is_counted() -> None:
    rec = _recommender(FakeStore(), FakeScorer(RuntimeError("bad graph")))
    [ranked] = await rec.recommend_many([_request()])
    assert [i.item_id for i in ranked.items] == POPULAR[:3]  # popularity order
    assert (rec.model_version, rec.scoring_errors) == (NO_MODEL, 1)
