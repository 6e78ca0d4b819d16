"""The ranking recommender: candidates → batched feature read → ONNX ranker → top-K.

Per ``recommend_many`` batch (all requests together), two Redis round trips:

1. ``store.candidate_inputs``: the co-visitors of every request's recent items, the
   popularity index (``popular_depth`` items, once for the batch) and every user's seen
   set, in ONE round trip;
2. ``store.read_many``: every candidate's item row, only the features the model
   reads, in ONE round trip. The users' columns come from their states in memory
   (``UserState.features``, the row the state writes), not from the store, where the
   latest row may not be flushed yet.

Candidates come from :func:`streamrec.models.candidates.generate` (EASE neighbours shipped
with the serving version, co-visitation, embedding neighbours in the ranker's item space,
popular; minus the user's newest seen items, features/indexes.py).
All rows of the batch are scored in ONE ``Scorer.score`` call (``batch_scoring=False``
scores per request instead; ``python -m streamrec.tools.bench_ranking --bench`` measures both).
Each list is then ordered by the bundle's re-ranker when its version has one
(models/reranker.py: the model's score, merge position, source and source score, and
context columns read in the same feature round trip; ONE re-ranker call per batch), else
by the reciprocal-rank fusion of the model's order with the merge order
(models/candidates.py ``fuse``).

The scorer, its feature columns, item vectors and search index come as one bundle
(models/serving.py) from a :class:`streamrec.models.watcher.ModelWatcher`, which swaps
in a newly promoted version without a restart (checking every ``poll_interval_s``, in
a thread); ``model_version`` names the version that scored the last batch. With no
model promoted (or a scoring failure) the list is ranked by the documented
heuristic — merge order: co-visitation by weight, then embedding neighbours, then
popularity — and ``model_version`` is ``"none"``. Model problems never raise; Redis
errors do (the worker cannot do anything useful without its store).

With ``near_cache_ms`` (the worker's ``recommend.near_cache_ms``) the items' model
columns, their co-visitors and the popular items read are reused for that long
(stream/near_cache.py) and only the rest is read; the users' seen sets are read for every
batch.

``Ranked.stage_ms`` holds the batch's ``candidates`` / ``features`` / ``scoring``
wall times in ms (every request of a batch waited for all of them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np

from streamrec.features.messages import ItemId, RecommendedItem, UserId
from streamrec.features.online import CandidateInputs, FeatureDict, OnlineFeatureStore, ReadRequest
from streamrec.models.candidates import EMPTY, CandidateConfig, Candidates, ScoredItems, fuse, generate, popular_scores, top_k
from streamrec.models.item_vectors import embedding_neighbours
from streamrec.models.reranker import CONTEXT, input_names, list_inputs
from streamrec.models.scorer import ScoreBatch, Scorer
from streamrec.models.serving import ServingBundle
from streamrec.models.watcher import ModelWatcher
from streamrec.stream.near_cache import NearCache
from streamrec.stream.recommend import Ranked, RecommendRequest

log = logging.getLogger(__name__)

NO_MODEL = "none"


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
    ``near_cache_ms``: how long item rows, co-visitors and the popular items read from
    the store are reused (0: read for every batch).
    """

    def __init__(self, store: OnlineFeatureStore, watcher: ModelWatcher | None, cfg: CandidateConfig, *,
                 top_k: int, batch_scoring: bool = True, near_cache_ms: float = 0.0) -> None:
        self._store, self._watcher, self.cfg = store, watcher, cfg
        self._top_k, self.batch_scoring = top_k, batch_scoring
        max_age_s = near_cache_ms / 1000.0
        self._item_rows: NearCache[ItemId, FeatureDict] = NearCache(max_age_s)
        self._item_columns: tuple[str, ...] = ()  # the columns _item_rows holds (the serving model's)
        self._neighbours: NearCache[ItemId, tuple[list[ItemId], list[float]]] = NearCache(max_age_s)
        self._popular: NearCache[int, tuple[list[ItemId], ScoredItems]] = NearCache(max_age_s)
        self._last_version = NO_MODEL
        self.scoring_errors = 0

    @property
    def model_version(self) -> str:
        """The version that ranked the last batch (``"none"``: the heuristic did)."""
        return self._last_version

    @property
    def provider(self) -> str:
        bundle = self._bundle()
        return bundle.provider if bundle else NO_MODEL

    @property
    def uses_ease(self) -> bool:
        """Whether the serving version's EASE neighbours propose candidates (and the
        re-ranker's inputs include the ease columns, models/reranker.py)."""
        bundle = self._bundle()
        return bundle is not None and bundle.ease is not None

    def _bundle(self) -> ServingBundle | None:
        return self._watcher.bundle if self._watcher is not None else None

    async def start(self) -> None:
        """Load the promoted model now (if any), so the first batch is ranked by it."""
        await self.refresh()
        bundle = self._bundle()
        if bundle is not None:
            self._last_version = bundle.version

    async def refresh(self) -> str:
        """Check the registry now; returns the version that will rank the next batch."""
        bundle = await self._watcher.refresh() if self._watcher is not None else None
        return bundle.version if bundle else NO_MODEL

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.close()

    async def recommend_many(self, requests: Sequence[RecommendRequest]) -> list[Ranked]:
        began = time.perf_counter()
        if not requests:
            return []
        if self._watcher is not None:
            self._watcher.refresh_if_due()
        serving = self._bundle()
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
        return await self._candidates(requests, self._bundle()) if requests else []

    async def _candidates(self, requests: Sequence[RecommendRequest], serving: ServingBundle | None) -> list[Candidates]:
        recents = [[(r.item_id, r.affinity) for r in request.state.recent[: self.cfg.recent_items]] for request in requests]
        expand = list(dict.fromkeys(item for recent in recents for item, _ in recent))
        users = list(dict.fromkeys(request.user_id for request in requests))
        inputs, popular = await self._candidate_inputs(expand, users)
        near: list[ScoredItems] = [EMPTY for _ in requests]
        ease = serving.ease if serving is not None else None
        if serving is not None and serving.vectors is not None and serving.index is not None and self.cfg.embedding:
            near = embedding_neighbours(serving.vectors, serving.index, recents, self.cfg.embedding)
        out = []
        for request, recent, nearby in zip(requests, recents, near):
            seen = inputs.seen.setdefault(request.user_id, set())
            seen.update(r.item_id for r in request.state.recent)  # the writer may not have flushed them yet
            out.append(generate(self.cfg, recent, inputs.neighbours, popular, seen, nearby, ease))
        return out

    async def _candidate_inputs(self, items: list[ItemId], users: list[UserId]) -> tuple[CandidateInputs, ScoredItems]:
        """The store's candidate inputs for ``items`` and ``users`` (with the popular items
        as scores), the co-visitors and popular items that the near cache holds not read again."""
        depth = self.cfg.popular_depth
        if not self._neighbours.enabled:
            inputs = await self._store.candidate_inputs(items, users, depth)
            return inputs, popular_scores(inputs.popular)
        now = time.monotonic()
        known, missing = self._neighbours.lookup(items, now)
        held, _ = self._popular.lookup((depth,), now)
        read = await self._store.candidate_inputs(missing, users, 0 if held else depth)
        self._neighbours.store(missing, [read.neighbours[item] for item in missing], now)
        if held:
            popular, scored = held[depth]
        else:
            popular, scored = read.popular, popular_scores(read.popular)
            self._popular.store((depth,), [(popular, scored)], now)
        known.update(read.neighbours)
        return CandidateInputs(known, popular, read.seen), scored

    async def _read_features(self, requests: Sequence[RecommendRequest], lists: list[Candidates],
                             serving: ServingBundle) -> FeatureRows:
        """The model's columns of the batch's users, from their states in memory (the rows
        they write, flushed or not), and of its candidates: ONE round trip (none when the
        near cache holds every candidate's row)."""
        row_items = list(chain.from_iterable(cands.item_ids for cands in lists))
        states = {r.user_id: r.state for r in requests}  # a user's requests of a batch share one state
        unique_items = list(dict.fromkeys(row_items))
        item_rows = await self._item_rows_of(serving.plan.item_request(unique_items))
        user_rows = [serving.plan.user_row(state) for state in states.values()]
        return FeatureRows(row_items, list(states), unique_items, user_rows, item_rows)

    async def _item_rows_of(self, request: ReadRequest) -> list[FeatureDict]:
        """The rows ``request`` asks for, those the near cache holds not read again."""
        cache = self._item_rows
        if not cache.enabled or not request.entity_ids:
            [rows] = await self._store.read_many([request])
            return rows
        columns = tuple(request.features or ())
        if columns != self._item_columns:  # another model: other columns
            cache.clear()
            self._item_columns = columns
        now = time.monotonic()
        known, missing = cache.lookup(request.entity_ids, now)
        if missing:
            [read] = await self._store.read_many([ReadRequest(request.view, missing, request.features)])
            cache.store(missing, read, now)
            known.update(zip(missing, read))
        return [known[item] for item in request.entity_ids]

    def _rank(self, requests: Sequence[RecommendRequest], lists: list[Candidates], serving: ServingBundle,
              rows: FeatureRows, stages: dict[str, float], fetched: float) -> list[Ranked]:
        """Score every candidate row with the model and keep each list's top-K (no I/O):
        ordered by the bundle's re-ranker when it has one, else by the fusion."""
        scores, dense, sizes, scored = self._model_scores(requests, lists, serving, rows)
        stages["features"] = (scored - fetched) * 1000
        if serving.reranker is not None:
            inputs = _list_inputs(lists, scores, serving.context(dense), sizes, serving.reranker.feature_names, serving.reranker.ease)
            order = np.split(serving.reranker.score(inputs), np.cumsum(sizes)[:-1])
        else:
            order = np.split(scores, np.cumsum(sizes)[:-1])
            if self.cfg.ranker_weight < 1.0:
                order = [fuse(mine, self.cfg.ranker_weight, self.cfg.fusion_k) for mine in order]
        out = [_items(cands, top_k(mine, self._top_k).tolist(), mine.tolist()) for cands, mine in zip(lists, order)]
        stages["scoring"] = (time.perf_counter() - scored) * 1000
        self._last_version = serving.version
        return [Ranked(items_, dict(stages)) for items_ in out]

    async def rerank_inputs(self, requests: Sequence[RecommendRequest],
                            context: Sequence[str] = CONTEXT) -> list[tuple[Candidates, np.ndarray]]:
        """Each request's candidates in merge order with the re-ranker's inputs for them
        (models/reranker.py ``list_inputs``, ``context`` columns read with the model's;
        the ease inputs when the serving version's EASE neighbours are in use, :attr:`uses_ease`):
        what ``_rank`` feeds a re-ranker, for building its training data
        (``tools/prequential.py``). Raises ``RuntimeError`` with no model loaded."""
        serving = self._bundle()
        if serving is None:
            raise RuntimeError("no model loaded: the re-ranker's inputs need the ranker's scores")
        if not requests:
            return []
        serving = serving.with_context(context)
        lists = await self._candidates(requests, serving)
        scores, dense, sizes, _ = self._model_scores(requests, lists, serving, await self._read_features(requests, lists, serving))
        inputs = np.split(_list_inputs(lists, scores, serving.context(dense), sizes, context, serving.ease is not None),
                          np.cumsum(sizes)[:-1])
        return list(zip(lists, inputs))

    def _model_scores(self, requests: Sequence[RecommendRequest], lists: list[Candidates], serving: ServingBundle,
                      rows: FeatureRows) -> tuple[np.ndarray, np.ndarray, list[int], float]:
        """The model's score of every candidate row, the plan's dense rows, the lists'
        sizes and when the features were ready (``perf_counter``)."""
        row_items, users, unique_items = rows.row_items, rows.users, rows.items
        user_pos = dict(zip(users, range(len(users))))
        item_pos = dict(zip(unique_items, range(len(unique_items))))
        sizes = [len(cands) for cands in lists]
        user_of = np.repeat(np.fromiter(map(user_pos.__getitem__, (r.user_id for r in requests)), np.int64, len(requests)), sizes)
        item_of = np.fromiter(map(item_pos.__getitem__, row_items), np.int64, count=len(row_items))
        dense = serving.plan.dense(rows.user_rows, rows.item_rows, user_of, item_of)
        scored = time.perf_counter()
        row_users = list(chain.from_iterable(map(repeat, (r.user_id for r in requests), sizes)))
        # the user's recent items, as the state holds them now: what a ranker+recent model reads
        recent = {r.user_id: [e.item_id for e in r.state.recent] for r in requests} if serving.scorer.recent_items else None
        return self._score(serving.scorer, row_users, row_items, serving.scorer_dense(dense), sizes, recent), dense, sizes, scored

    def _score(self, scorer: Scorer, users: list[str], items: list[str], dense: np.ndarray, sizes: list[int],
               recent: dict[UserId, list[ItemId]] | None) -> np.ndarray:
        if self.batch_scoring or len(sizes) == 1:
            return scorer.score(ScoreBatch(users, items, dense, recent))
        parts, start = [], 0
        for n in sizes:
            parts.append(scorer.score(ScoreBatch(users[start], items[start : start + n], dense[start : start + n], recent)) if n else np.zeros(0, np.float32))
            start += n
        return np.concatenate(parts)


def _list_inputs(lists: list[Candidates], scores: np.ndarray, context: np.ndarray, sizes: list[int],
                 names: Sequence[str], ease: bool) -> np.ndarray:
    """The re-ranker's input rows of every list (``context``: the ``names`` columns; the
    ease inputs with ``ease``), concatenated in the lists' order."""
    bounds = np.cumsum([0, *sizes])
    parts = [list_inputs(scores[a:b], cands, context[a:b], names, ease) for cands, a, b in zip(lists, bounds[:-1], bounds[1:])]
    return np.concatenate(parts) if parts else np.zeros((0, len(input_names(names, ease))), np.float32)


def _items(cands: Candidates, picks: Iterable[int], scores: Sequence[float]) -> list[RecommendedItem]:
    """The list's items: candidates ``picks`` (indices) with ``scores[pick]``. Objects are
    built only here, for the few candidates that reach a list (validation included: the
    validating constructor is cheaper than ``model_construct``)."""
    return [RecommendedItem(item_id=cands.item_ids[i], score=scores[i], source=cands.source(i)) for i in picks]
