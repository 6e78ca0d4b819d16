"""The ranking recommender: candidates → batched feature read → ONNX ranker → top-K.

Per ``recommend_many`` batch (all requests together), two Redis round trips:

1. ``store.candidate_inputs``: the co-visitors of every request's recent items, the
   popularity index (``popular_depth`` items, once for the batch) and every user's seen
   set, in ONE round trip;
2. ``store.read_many``: the users' rows and every candidate's item row, only the
   features the model reads, in ONE round trip.

Candidates come from :func:`streamrec.models.candidates.generate` (co-visitation, embedding
neighbours in the ranker's item space, popular; minus the user's newest seen items, features/indexes.py).
All rows of the batch are scored in ONE ``Scorer.score`` call (``batch_scoring=False``
scores per request instead; ``python -m streamrec.tools.bench_ranking --bench`` measures both).

The scorer comes from a :class:`streamrec.models.watcher.ModelWatcher`: every
``poll_interval_s`` a background thread checks the registry's CURRENT file and swaps
in a newly promoted version (with its item vectors and search index) without a
restart; ``model_version`` names the version that scored the last batch. With no
model promoted (or a scoring failure) the list is ranked by the documented
heuristic — merge order: co-visitation by weight, then embedding neighbours, then
popularity — and ``model_version`` is ``"none"``. Model problems never raise; Redis
errors do (the worker cannot do anything useful without its store).

``Ranked.stage_ms`` holds the batch's ``candidates`` / ``features`` / ``scoring``
wall times in ms (every request of a batch waited for all of them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from streamrec.features.messages import ItemId, RecommendedItem, UserId
from streamrec.features.online import FeatureDict, OnlineFeatureStore, ReadRequest
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, VIEWS
from streamrec.models.candidates import EMPTY, CandidateConfig, Candidates, ScoredItems, fuse, generate, popular_scores, top_k
from streamrec.models.item_vectors import ItemVectors, VectorIndex, build_index, embedding_neighbours, load_item_vectors
from streamrec.models.scorer import ScoreBatch, Scorer
from streamrec.models.watcher import ModelWatcher, NoModelError
from streamrec.stream.recommend import Ranked, RecommendRequest

log = logging.getLogger(__name__)

NO_MODEL = "none"


class FeaturePlan:
    """The model's dense columns (``<view>:<feature>``, the online names) split by view.

    Raises ``ValueError`` at model load for a name the online store does not hold,
    so a model/feature mismatch refuses the model instead of scoring garbage.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.user: list[tuple[int, str]] = []
        self.item: list[tuple[int, str]] = []
        for col, name in enumerate(self.names):
            view, _, feature = name.partition(":")
            if view not in (USER_VIEW, ITEM_VIEW) or feature not in VIEWS[view].feature_names:
                raise ValueError(f"model feature {name!r} is not an online {USER_VIEW}/{ITEM_VIEW} feature")
            if VIEWS[view].dtype(feature) not in ("float64", "int64"):
                raise ValueError(f"model feature {name!r} is not numeric")
            (self.user if view == USER_VIEW else self.item).append((col, feature))

    def requests(self, users: Sequence[UserId], items: Sequence[ItemId]) -> list[ReadRequest]:
        """The user rows and the item rows, only the model's columns; no read at all for
        a view the model does not use."""
        return [ReadRequest(USER_VIEW, users if self.user else [], [f for _, f in self.user] or ["event_count"]),
                ReadRequest(ITEM_VIEW, items if self.item else [], [f for _, f in self.item] or ["event_count"])]

    def dense(self, user_rows: list[FeatureDict], item_rows: list[FeatureDict], user_of: np.ndarray, item_of: np.ndarray) -> np.ndarray:
        """float32 [rows, F]: row r has the features of user ``user_of[r]`` and item
        ``item_of[r]`` (indices into the row lists); NaN where a value is missing."""
        out = np.empty((len(item_of), len(self.names)), np.float32)
        for columns, rows, index in ((self.user, user_rows, user_of), (self.item, item_rows, item_of)):
            for col, feature in columns:
                values = np.array([row.get(feature) for row in rows], np.float32)  # None becomes NaN
                out[:, col] = values[index] if len(values) else np.nan
        return out


@dataclass(frozen=True)
class Serving:
    """One loaded model version with what ranking needs beside the scorer."""

    scorer: Scorer
    version: str
    plan: FeaturePlan
    vectors: ItemVectors | None
    index: VectorIndex | None

    @classmethod
    def load(cls, scorer: Scorer, version: str, watcher: ModelWatcher, cfg: CandidateConfig) -> Serving:
        """Blocking: reads the item vectors and builds their index."""
        plan = FeaturePlan(scorer.feature_names)
        try:
            vectors = load_item_vectors(watcher.registry, version)
        except Exception as exc:  # vectors are optional: rank without the embedding source
            log.warning("model %s: no item vectors (%s); embedding candidates off", version, exc)
            vectors = None
        index = build_index(vectors, cfg) if vectors is not None else None
        return cls(scorer, version, plan, vectors, index)


@dataclass(frozen=True)
class FeatureRows:
    """What one ranking read returned: every candidate row's item, the distinct users and
    items, and their rows."""

    row_items: list[ItemId]
    users: list[UserId]
    items: list[ItemId]
    user_rows: list[FeatureDict]
    item_rows: list[FeatureDict]


class RankingRecommender:
    """Implements ``streamrec.stream.recommend.Recommender``. Not thread-safe; one per worker.

    ``scoring_errors`` counts the batches a model failed to score (each fell back to
    the heuristic); the worker exports it as the ``scoring_errors`` counter.
    """

    def __init__(
        self,
        store: OnlineFeatureStore,
        watcher: ModelWatcher | None,
        cfg: CandidateConfig,
        *,
        top_k: int,
        poll_interval_s: float = 2.0,
        batch_scoring: bool = True,
    ) -> None:
        self._store, self._watcher, self.cfg = store, watcher, cfg
        self._top_k, self._poll_interval_s, self.batch_scoring = top_k, poll_interval_s, batch_scoring
        self._serving: Serving | None = None
        self._next_poll = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._last_version = NO_MODEL
        self._refused: str | None = None
        self.scoring_errors = 0

    @property
    def model_version(self) -> str:
        """The version that ranked the last batch (``"none"``: the heuristic did)."""
        return self._last_version

    @property
    def provider(self) -> str:
        serving = self._serving
        return f"{serving.scorer.providers[0]}:{serving.scorer.variant}" if serving else NO_MODEL

    async def start(self) -> None:
        """Load the promoted model now (if any), so the first batch is ranked by it."""
        if self._watcher is not None:
            await self._refresh()
        self._next_poll = time.monotonic() + self._poll_interval_s
        if self._serving is not None:
            self._last_version = self._serving.version

    async def refresh(self) -> str:
        """Pick up the watcher's current version now (e.g. right after a promotion),
        not at the next poll; returns the version that will rank the next batch."""
        if self._watcher is not None:
            await self._refresh()
        return self._serving.version if self._serving else NO_MODEL

    async def close(self) -> None:
        if self._refreshing is not None:
            await asyncio.gather(self._refreshing, return_exceptions=True)

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if self._watcher is None or now < self._next_poll or (self._refreshing and not self._refreshing.done()):
            return
        self._next_poll = now + self._poll_interval_s
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            self._serving = await asyncio.to_thread(self._poll_blocking, self._serving)
        except Exception:  # a failed refresh keeps the serving model
            log.exception("model refresh failed; keeping %s", self._serving.version if self._serving else NO_MODEL)

    def _poll_blocking(self, serving: Serving | None) -> Serving | None:
        assert self._watcher is not None
        self._watcher.poll()
        try:
            scorer, version = self._watcher.current()
        except NoModelError:
            return serving
        if (serving is not None and serving.version == version) or version == self._refused:
            return serving
        try:
            return Serving.load(scorer, version, self._watcher, self.cfg)
        except ValueError as exc:  # e.g. a feature the online store lacks: keep the old one
            self._refused = version
            log.error("refusing model %s: %s", version, exc)
            return serving

    async def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Ranked]:
        began = time.perf_counter()
        if not requests:
            return []
        self._maybe_refresh()
        serving = self._serving
        lists = await self._candidates(requests, serving)
        fetched = time.perf_counter()
        stages = {"candidates": (fetched - began) * 1000, "features": 0.0, "scoring": 0.0}
        if serving is not None:
            # outside the guard below: a Redis error here stops the worker, as in _candidates
            rows = await self._read_features(requests, lists, serving)
            try:
                return self._rank(requests, lists, serving, rows, stages, fetched)
            except Exception:  # a bad model: the worker keeps serving the heuristic list
                self.scoring_errors += 1
                log.exception("scoring with model %s failed; heuristic ranking for this batch", serving.version)
        self._last_version = NO_MODEL
        return [Ranked(_items(cands, range(min(self._top_k, len(cands))), cands.scores), dict(stages)) for cands in lists]

    async def candidate_lists(self, requests: Sequence[RecommendRequest]) -> list[Candidates]:
        """Each request's candidates in merge order, unranked: what ``recommend_many``
        would score with the serving model (its embedding neighbours included). One
        candidate read, no feature read; for evaluation (``tools/prequential.py``)."""
        return await self._candidates(requests, self._serving) if requests else []

    async def _candidates(self, requests: Sequence[RecommendRequest], serving: Serving | None) -> list[Candidates]:
        recents = [[(r.item_id, r.affinity) for r in request.state.recent[: self.cfg.recent_items]] for request in requests]
        expand = list(dict.fromkeys(item for recent in recents for item, _ in recent))
        users = list(dict.fromkeys(request.user_id for request in requests))
        inputs = await self._store.candidate_inputs(expand, users, self.cfg.popular_depth)
        popular = popular_scores(inputs.popular)
        near: list[ScoredItems] = [EMPTY for _ in requests]
        if serving is not None and serving.vectors is not None and serving.index is not None and self.cfg.embedding:
            near = embedding_neighbours(serving.vectors, serving.index, recents, self.cfg.embedding)
        out = []
        for request, recent, nearby in zip(requests, recents, near):
            seen = inputs.seen.setdefault(request.user_id, set())
            seen.update(r.item_id for r in request.state.recent)  # the writer may not have flushed them yet
            out.append(generate(self.cfg, recent, inputs.neighbours, popular, seen, nearby))
        return out

    async def _read_features(self, requests: Sequence[RecommendRequest], lists: list[Candidates],
                             serving: Serving) -> FeatureRows:
        """The model's columns of the batch's users and candidates: ONE round trip."""
        row_items = list(chain.from_iterable(cands.item_ids for cands in lists))
        users = list(dict.fromkeys(r.user_id for r in requests))
        unique_items = list(dict.fromkeys(row_items))
        user_rows, item_rows = await self._store.read_many(serving.plan.requests(users, unique_items))
        return FeatureRows(row_items, users, unique_items, user_rows, item_rows)

    def _rank(self, requests: Sequence[RecommendRequest], lists: list[Candidates], serving: Serving,
              rows: FeatureRows, stages: dict[str, float], fetched: float) -> list[Ranked]:
        """Score every candidate row with the model and keep each list's top-K (no I/O)."""
        row_items, users, unique_items = rows.row_items, rows.users, rows.items
        user_rows, item_rows = rows.user_rows, rows.item_rows
        user_pos = dict(zip(users, range(len(users))))
        item_pos = dict(zip(unique_items, range(len(unique_items))))
        sizes = [len(cands) for cands in lists]
        user_of = np.repeat(np.fromiter(map(user_pos.__getitem__, (r.user_id for r in requests)), np.int64, len(requests)), sizes)
        item_of = np.fromiter(map(item_pos.__getitem__, row_items), np.int64, count=len(row_items))
        dense = serving.plan.dense(user_rows, item_rows, user_of, item_of)
        scored = time.perf_counter()
        stages["features"] = (scored - fetched) * 1000
        row_users = list(chain.from_iterable(map(repeat, (r.user_id for r in requests), sizes)))
        # the user's recent items, as the state holds them now: what a ranker+recent model reads
        recent = {r.user_id: [e.item_id for e in r.state.recent] for r in requests} if serving.scorer.recent_items else None
        scores = self._score(serving.scorer, row_users, row_items, dense, sizes, recent)
        out, start = [], 0
        for cands, n in zip(lists, sizes):
            mine = scores[start : start + n]
            if self.cfg.ranker_weight < 1.0:
                mine = fuse(mine, self.cfg.ranker_weight, self.cfg.fusion_k)
            out.append(_items(cands, top_k(mine, self._top_k).tolist(), mine.tolist()))
            start += n
        stages["scoring"] = (time.perf_counter() - scored) * 1000
        self._last_version = serving.version
        return [Ranked(items_, dict(stages)) for items_ in out]

    def _score(self, scorer: Scorer, users: list[str], items: list[str], dense: np.ndarray, sizes: list[int],
               recent: dict[UserId, list[ItemId]] | None) -> np.ndarray:
        if self.batch_scoring or len(sizes) == 1:
            return scorer.score(ScoreBatch(users, items, dense, recent))
        parts, start = [], 0
        for n in sizes:
            parts.append(scorer.score(ScoreBatch(users[start], items[start : start + n], dense[start : start + n], recent)) if n else np.zeros(0, np.float32))
            start += n
        return np.concatenate(parts)


def _items(cands: Candidates, picks: Iterable[int], scores: Sequence[float]) -> list[RecommendedItem]:
    """The list's items: candidates ``picks`` (indices) with ``scores[pick]``. Objects are
    built only here, for the few candidates that reach a list (validation included: the
    validating constructor is cheaper than ``model_construct``)."""
    return [RecommendedItem(item_id=cands.item_ids[i], score=scores[i], source=cands.source(i)) for i in picks]
