"""The recommend step's seam, and the walking skeleton's first implementation.

A ``Recommender`` turns (user state, cause event) into a ranked list with the time
spent in each stage. The worker knows nothing else about it, so a stronger one
(candidates from co-visitation, popularity and embeddings, ranked by the ONNX model)
replaces this one without touching the agents.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from features.user_state import UserState
from stream.schemas import ClickEvent, RecommendedItem


@dataclass
class Ranked:
    items: list[RecommendedItem]
    stage_ms: dict[str, float] = field(default_factory=dict)  # candidates, features, scoring


class Recommender(Protocol):
    @property
    def model_version(self) -> str: ...

    @property
    def provider(self) -> str: ...

    async def recommend(self, user_id: str, state: UserState, cause: ClickEvent) -> Ranked:
        """Rank items for ``user_id`` now. Never raises for a user with no history."""
        ...


class TopItemsIndex(Protocol):
    async def top_items_by_mean(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` items with the highest mean rating (among those with enough ratings), best first."""
        ...

    async def seen_items(self, user_id: str) -> set[str]:
        """Every item the user has interacted with."""
        ...


class TopMeanRecommender:
    """Highest-mean items (with a minimum rating count) that the user has not interacted with."""

    model_version = "top-mean-v1"
    provider = "none"

    def __init__(self, index: TopItemsIndex, *, top_k: int, candidates: int) -> None:
        self._index = index
        self._top_k = top_k
        self._candidates = candidates

    async def recommend(self, user_id: str, state: UserState, cause: ClickEvent) -> Ranked:
        began = time.perf_counter()
        seen = await self._index.seen_items(user_id)
        seen.update(r.item_id for r in state.recent)  # the writer may not have flushed the newest yet
        pool = await self._index.top_items_by_mean(self._candidates + len(seen))
        fetched = time.perf_counter()
        items = [RecommendedItem(item_id=i, score=s, source="top_mean") for i, s in pool if i not in seen][: self._top_k]
        done = time.perf_counter()
        return Ranked(items, {"candidates": (fetched - began) * 1000, "features": 0.0, "scoring": (done - fetched) * 1000})
