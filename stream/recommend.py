"""The recommend step's seam, and its simplest implementation.

A ``Recommender`` turns (user state, cause event) into a ranked list with the time
spent in each stage. The worker knows nothing else about it: :class:`TopMeanRecommender`
(best-rated unseen items, from the online store's indexes) and the ranking one
(stream/ranking.py: candidates from co-visitation, popularity and embeddings, ranked by
the ONNX model) are interchangeable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from streamrec.features.messages import ClickEvent, RecommendedItem
from streamrec.features.online import OnlineFeatureStore
from streamrec.features.user_state import UserState


@dataclass(frozen=True)
class RecommendRequest:
    """Rank for ``user_id`` because of ``cause``; ``covers`` are the ids of earlier
    triggering events of the user that this one supersedes (their effect is in ``state``)."""

    user_id: str
    state: UserState
    cause: ClickEvent
    covers: tuple[str, ...] = ()

    def superseding(self, earlier: RecommendRequest) -> RecommendRequest:
        """This request, also covering ``earlier`` (and what it covered)."""
        return replace(self, covers=(*earlier.covers, earlier.cause.event_id, *self.covers))


def coalesce(requests: Sequence[RecommendRequest]) -> list[RecommendRequest]:
    """One request per user, the last one (which covers the user's earlier ones), in the
    order of those last requests. Within a batch every request of a user ranks the same
    state, so the earlier lists would only repeat the last one."""
    latest: dict[str, RecommendRequest] = {}
    for request in requests:
        earlier = latest.pop(request.user_id, None)
        latest[request.user_id] = request if earlier is None else request.superseding(earlier)
    return list(latest.values())


@dataclass
class Ranked:
    items: list[RecommendedItem]
    stage_ms: dict[str, float] = field(default_factory=dict)  # candidates, features, scoring


class Recommender(Protocol):
    @property
    def model_version(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def scoring_errors(self) -> int:
        """Batches a model failed to rank since start (each got a fallback list instead)."""
        ...

    async def start(self) -> None:
        """Load what ranking needs (a model, say); called once before the first batch."""
        ...

    async def close(self) -> None: ...

    async def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Ranked]:
        """Rank items for each request, in order, batching the I/O across them.

        Never raises for a user with no history (cold start gets a fallback list).
        """
        ...


class TopMeanRecommender:
    """Highest-mean items (with a minimum rating count) that the user has not interacted with,
    topped up with the most popular items while few items have enough ratings (cold start)."""

    model_version = "top-mean-v1"
    provider = "none"
    scoring_errors = 0  # no model to fail

    def __init__(self, index: OnlineFeatureStore, *, top_k: int, candidates: int) -> None:
        self._index = index
        self._top_k = top_k
        self._candidates = candidates

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Ranked]:
        began = time.perf_counter()
        seen_sets = await asyncio.gather(*(self._index.seen_items(r.user_id) for r in requests))
        for request, seen in zip(requests, seen_sets):
            seen.update(item.item_id for item in request.state.recent)  # the writer may not have flushed yet
        depth = self._candidates + max(len(s) for s in seen_sets)
        pool = [(i, s, "top_mean") for i, s in await self._index.top_items_by_mean(depth)]
        if len(pool) < depth:
            ranked = {i for i, _, _ in pool}
            popular = await self._index.top_items_by_popularity(depth)
            pool += [(i, 0.0, "popular") for i in popular if i not in ranked]
        fetched = time.perf_counter()
        out = []
        for seen in seen_sets:
            items = [RecommendedItem(item_id=i, score=s, source=src) for i, s, src in pool if i not in seen]
            out.append(items[: self._top_k])
        done = time.perf_counter()
        stages = {"candidates": (fetched - began) * 1000, "features": 0.0, "scoring": (done - fetched) * 1000}
        return [Ranked(items, stages) for items in out]
