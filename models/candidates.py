"""Candidate generation for the recommend step: pure functions over values already read.

Four sources, most personal first (that order is also the precedence when merging):

``ease``
    Offline item-item neighbours of the user's ``recent_items`` newest items: each
    item's largest EASE weights, fitted on the serving version's training events and
    shipped with it (``streamrec.models.ease_neighbours``); scored as ``covisit`` is.
``covisit``
    Co-visitation neighbours of the user's ``recent_items`` newest items:
    ``score(j) = Σ_r affinity(r) · w(r, j)`` over the recent items ``r`` whose
    ``covisit_items`` row lists ``j`` with weight ``w(r, j)``.
``embedding``
    The nearest items (cosine) to the affinity-weighted mean of the recent items'
    vectors in the ranker's item-embedding space (``streamrec.models.item_vectors``).
``popular``
    Items by time-decayed popularity (the store's index), ``score = 1 / (1 + rank)``.

Merging keeps, for an item that several sources propose, the most personal source
(ease > covisit > embedding > popular) and that source's score; EASE, co-visitation and
embedding contribute at most ``ease``, ``covisit`` and ``embedding`` *new* items; popular
items fill the rest of ``max_candidates`` (at least ``max_candidates - covisit - embedding`` of them,
more when the personal sources run short, none when they fill it). Only the ``popular_depth`` most popular
items are read, so a user who has seen most of them gets a shorter list.

Exclusion: every item in the user's seen set (all interactions: views, clicks, carts,
purchases, ratings — so purchased and rated items always). The online store keeps no
narrower "bought or rated" index; excluding everything seen is the stricter choice
and keeps a list from repeating what the user just looked at.

Cold start: a user with no recent items gets popular items only, up to
``max_candidates`` (so does a user whose recent items have no neighbours yet).
Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import filterfalse, islice
from typing import Literal, NamedTuple, TypeAlias

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamrec.features.messages import ItemId

CandidateSource: TypeAlias = Literal["ease", "covisit", "embedding", "popular"]
SOURCES: tuple[CandidateSource, ...] = ("ease", "covisit", "embedding", "popular")
NeighbourLists: TypeAlias = Mapping[ItemId, tuple[Sequence[ItemId], Sequence[float]]]


class CandidateConfig(BaseModel):
    """Sizes of each source and the exact/ANN switch (nested as ``STREAMREC_RECOMMEND__...``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    recent_items: int = Field(default=10, ge=0, le=1000, description="Newest recent items whose neighbours are expanded.")
    ease: int = Field(
        default=150, ge=0, le=100_000,
        description="Most EASE-neighbour candidates per request, from the neighbours shipped with the serving "
                    "version (models/ease_neighbours.py); 0 turns the source off. 150 was best of 50/100/150 on "
                    "a validation window (README: recommendation quality).",
    )
    covisit: int = Field(default=100, ge=0, le=100_000, description="Most co-visitation candidates per request.")
    embedding: int = Field(default=50, ge=0, le=100_000, description="Most embedding-neighbour candidates per request.")
    max_candidates: int = Field(default=200, ge=1, le=100_000, description="Candidates per request; popular items fill the rest.")
    popular_depth: int = Field(default=500, ge=1, le=1_000_000, description="Popular items read per batch (fills and cold starts).")
    exact_search_max_items: int = Field(
        default=50_000, ge=0, description="Catalogues up to this size use exact numpy search; larger ones an HNSW index."
    )
    ranker_weight: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="The model's order against the merge order in the final list (reciprocal-rank fusion, "
                    "fuse()); 1 ranks by the model alone, 0 keeps the merge order. 0.5 was best of 0.2/0.35/0.5 "
                    "on a validation window (README: recommendation quality).",
    )
    fusion_k: float = Field(default=60.0, gt=0, description="Reciprocal-rank fusion's k: larger flattens the top ranks' lead.")
    ann_connectivity: int = Field(default=16, ge=2, le=256, description="HNSW graph degree (usearch connectivity).")
    ann_expansion_search: int = Field(default=128, ge=1, le=10_000, description="HNSW search breadth (recall vs time).")

    @model_validator(mode="after")
    def _depth_covers_fills(self) -> CandidateConfig:
        if self.popular_depth < self.max_candidates:
            raise ValueError(
                f"popular_depth ({self.popular_depth}) must be >= max_candidates ({self.max_candidates}) "
                "so that a cold start gets a full list"
            )
        return self


class Candidate(NamedTuple):  # one merged candidate, built on demand (see Candidates)
    item_id: ItemId
    source: CandidateSource
    score: float


Scored: TypeAlias = Sequence[tuple[ItemId, float]]  # (item, score), best first


@dataclass(frozen=True, slots=True)
class ScoredItems:
    """One source's proposals: ``items`` best first, each once, and ``score[item]``.

    Columns rather than (item, score) pairs so that merging can filter and slice them
    with C-level iterators instead of a Python step per proposal.
    """

    items: Sequence[ItemId]
    score: Mapping[ItemId, float]

    @classmethod
    def of(cls, scored: Scored) -> ScoredItems:
        """From (item, score) pairs best first; a repeated item keeps its first score."""
        return cls.from_columns([item for item, _ in scored], [score for _, score in scored])

    @classmethod
    def from_columns(cls, items: Sequence[ItemId], scores: Sequence[float]) -> ScoredItems:
        """From parallel columns best first; a repeated item keeps its first score."""
        score = dict(zip(reversed(items), reversed(scores)))  # the first occurrence is assigned last
        return cls(list(dict.fromkeys(items)) if len(score) < len(items) else list(items), score)

    def pairs(self) -> list[tuple[ItemId, float]]:
        return [(item, self.score[item]) for item in self.items]


EMPTY = ScoredItems((), {})


@dataclass(frozen=True, slots=True)
class Candidates:
    """One request's candidates in merge order, as columns.

    Each source's picks form one contiguous block (``blocks``: (source, count) in
    precedence order), so merging builds no object per candidate: the ranker needs
    ids and scores only, and makes objects for the few candidates that reach a list.
    Iterating yields :class:`Candidate` tuples (tests, diagnostics).
    """

    item_ids: list[ItemId]
    scores: list[float]
    blocks: tuple[tuple[CandidateSource, int], ...]

    def __len__(self) -> int:
        return len(self.item_ids)

    def __iter__(self) -> Iterator[Candidate]:
        return map(Candidate, self.item_ids, self.sources(), self.scores)

    def sources(self) -> list[CandidateSource]:
        """The source of every candidate, in order."""
        return [source for source, count in self.blocks for _ in range(count)]

    def source(self, index: int) -> CandidateSource:
        for source, count in self.blocks:
            if index < count:
                return source
            index -= count
        raise IndexError(index)


def covisit_scores(recent: Scored, neighbours: NeighbourLists) -> list[tuple[ItemId, float]]:
    """Neighbours of ``recent`` ((item, affinity) pairs) scored by Σ affinity · weight,
    best first (ties: first reached); an item of ``recent`` itself is never proposed."""
    return covisit_items(recent, neighbours).pairs()


def covisit_items(recent: Scored, neighbours: NeighbourLists) -> ScoredItems:
    """:func:`covisit_scores` as :class:`ScoredItems`.

    The order is a stable sort by descending score for every finite score (a NaN
    weight or affinity gives an unspecified order, as it always did)."""
    own = {item for item, _ in recent}
    scores: dict[ItemId, float] = {}
    get = scores.get
    for item, affinity in recent:
        row = neighbours.get(item)
        if row is None:
            continue
        for other, weight in zip(*row):
            if other not in own:
                scores[other] = get(other, 0.0) + affinity * weight
    # reverse=True keeps the sort stable: ties keep first-reached order
    return ScoredItems(sorted(scores, key=scores.__getitem__, reverse=True), scores)


def popular_scores(items: Sequence[ItemId]) -> ScoredItems:
    """Popularity order as scores ``1 / (1 + rank)`` (a repeated item keeps its best rank)."""
    return ScoredItems.from_columns(items, _rank_scores(len(items)))


@lru_cache(maxsize=8)
def _rank_scores(n: int) -> list[float]:
    return [1.0 / (1 + rank) for rank in range(n)]


def merge(sources: Sequence[tuple[CandidateSource, ScoredItems, int]], exclude: Collection[ItemId], limit: int) -> Candidates:
    """De-duplicate ``sources`` ((name, proposals, quota), in precedence order).

    Each source adds at most its quota of items not excluded and not already taken by
    an earlier source. The result holds each item once, none of ``exclude``, at most
    ``limit`` in all, in merge order.
    """
    item_ids: list[ItemId] = []
    scores: list[float] = []
    blocks: list[tuple[CandidateSource, int]] = []
    taken: set[ItemId] = set()
    room = limit
    for source, proposed, quota in sources:
        quota = min(quota, room)
        if quota <= 0:
            continue
        fresh: Iterator[ItemId] = filterfalse(exclude.__contains__, proposed.items)
        if taken:
            fresh = filterfalse(taken.__contains__, fresh)
        picked = list(islice(fresh, quota))
        item_ids += picked
        scores += map(proposed.score.__getitem__, picked)
        taken.update(picked)
        blocks.append((source, len(picked)))
        room -= len(picked)
    return Candidates(item_ids, scores, tuple(blocks))


def generate(
    cfg: CandidateConfig,
    recent: Scored,
    neighbours: NeighbourLists,
    popular: ScoredItems,
    seen: Collection[ItemId],
    embedding: ScoredItems = EMPTY,
    ease: NeighbourLists | None = None,
) -> Candidates:
    """One request's candidates. ``recent`` newest first (only the first
    ``cfg.recent_items`` are expanded); ``popular`` from :func:`popular_scores`
    (built once per batch); ``embedding`` already ranked, best first; ``ease`` the
    serving version's EASE neighbours (``None``: none shipped, or the source is off)."""
    recent = recent[: cfg.recent_items]
    exclude = seen if all(item in seen for item, _ in recent) else set(seen).union(item for item, _ in recent)
    if not recent:
        return merge([("popular", popular, cfg.max_candidates)], exclude, cfg.max_candidates)
    sources: list[tuple[CandidateSource, ScoredItems, int]] = [
        ("covisit", covisit_items(recent, neighbours), cfg.covisit),
        ("embedding", embedding, cfg.embedding),
        ("popular", popular, cfg.max_candidates),
    ]
    if ease and cfg.ease:
        sources.insert(0, ("ease", covisit_items(recent, ease), cfg.ease))
    return merge(sources, exclude, cfg.max_candidates)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; ties keep the lower index first.
    NaN scores rank last. O(n + k log k)."""
    n = len(scores)
    k = min(max(k, 0), n)
    if k == 0:
        return np.zeros(0, np.int64)
    keys = np.where(np.isnan(scores), -np.inf, scores).astype(np.float64)
    if k < n:
        threshold = np.partition(keys, n - k)[n - k]
        pool = np.flatnonzero(keys >= threshold)
    else:
        pool = np.arange(n)
    order = np.lexsort((pool, -keys[pool]))  # by score desc, then index asc
    return pool[order][:k].astype(np.int64)


def fuse(scores: np.ndarray, ranker_weight: float, k: float) -> np.ndarray:
    """Reciprocal-rank fusion of the model's order (``scores``, higher first) with the
    merge order (the candidates' positions): ``w / (k + rank) + (1 - w) / (k + position)``,
    ranks from 1. The merge order carries what the model does not see: how strongly the
    user's recent items co-visit a candidate, and which source proposed it."""
    n = len(scores)
    rank = np.empty(n, np.float64)
    rank[top_k(scores, n)] = np.arange(1, n + 1)
    return ranker_weight / (k + rank) + (1.0 - ranker_weight) / (k + np.arange(1, n + 1, dtype=np.float64))
