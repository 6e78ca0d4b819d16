"""Prequential (test-then-learn) evaluation of the live recommend path.

A data set is replayed in event-time order through the worker's own code, without a
broker: each event updates its user's and items' state with the pure update functions
(``features/user_state.py``, ``features/item_state.py``), the rows go to a real Redis
through ``features/online.py``'s :class:`RedisFeatureStore` (with the popularity and
seen indexes), and every user of a batch gets a new list from ``stream/ranking.py``'s
:class:`RankingRecommender` (the store's candidate inputs, ``models/candidates.py``,
the ONNX ranker). Before an event is applied it is scored against the list its user
held at that moment, the one made after the user's previous batch.

Per event and variant: HR@k, NDCG@k and MRR (reciprocal rank inside the list, 0 when
the item is absent); per variant, catalogue coverage (distinct items shown in the
scored lists over the items of the data set) and ARP, the average recommendation
popularity: the mean number of earlier events on each item shown (the items people
actually picked, ``arp_events``, are the reference).

Batches follow event time: consecutive events within ``window_s`` of the batch's first
event (MovieLens stamps whole seconds, and one second's events have no order among
them). Each user of a batch gets one list, from its state after the batch, as the
worker's coalescing does (``stream/recommend.py``).

Variants, all in one pass, each its own :class:`RankingRecommender` over the same store:

``popularity``  the popular source alone, in merge order;
``covisit``     co-visitation neighbours first (popular items fill a short list), merge order;
``candidates``  the pipeline's candidates (co-visitation, embedding, popular) in merge order;
``pipeline``    the same candidates ranked by the model: what the worker serves.

Only events from index ``start`` on are scored; earlier ones warm the state up (the
ranker is trained on them, see ``tools/quality.py``), and lists are made then only
for users whose next event is scored.

With ``collect_from`` the replay also builds the re-ranker's data (models/reranker.py):
the pipeline's candidates with the re-ranker's inputs, as the worker's code makes them
(``RankingRecommender.rerank_inputs``), held per user like the lists. Each training event
(index ``collect_from`` to ``start``, before the scored ones) with its held list, made with
the ``collector`` ranker (one trained before ``collect_from``, so that its scores there
are as good as the serving ranker's on the scored events, not better), is a training list (``ScoredEvents.train_lists``: positive = the item picked, if the list holds
it); each scored event's held list is kept whole (``test_lists``), so that a re-ranker
trained afterwards on the training lists alone orders exactly the lists the other
variants were scored on (:func:`add_reranked`).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState, ItemUpdate, apply_item_event
from streamrec.features.messages import ClickEvent, ItemId, UserId
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event
from streamrec.models.candidates import CandidateConfig
from streamrec.models.candidates import top_k
from streamrec.models.config import ModelConfig
from streamrec.models.metrics import hit_rate, mrr, ndcg
from streamrec.models.rerank_training import ListSamples, positive_ranks
from streamrec.models.reranker import input_names
from streamrec.models.watcher import ModelWatcher
from streamrec.stream.ranking import RankingRecommender
from streamrec.stream.recommend import RecommendRequest

VARIANTS = ("popularity", "covisit", "candidates", "pipeline")
FLUSH_ROWS = 5000  # rows held back at most while no list is due (warm-up writes in big batches)
ABSENT = np.iinfo(np.int64).max // 2  # the rank of an item the list does not hold


def variant_configs(cfg: CandidateConfig) -> dict[str, CandidateConfig]:
    """The candidate settings of the model-free variants (``candidates`` and
    ``pipeline`` use ``cfg`` itself)."""
    return {
        "popularity": cfg.model_copy(update={"covisit": 0, "embedding": 0}),
        "covisit": cfg.model_copy(update={"covisit": cfg.max_candidates, "embedding": 0}),
    }


def batches(ts: Sequence[float], window_s: float, batch_max: int = 500) -> Iterator[range]:
    """Consecutive index ranges: each batch holds the events within ``window_s`` of its
    first event's time, at most ``batch_max`` (``ts`` ascending, seconds)."""
    start = 0
    for i in range(1, len(ts) + 1):
        if i == len(ts) or ts[i] - ts[start] >= window_s or i - start >= batch_max:
            yield range(start, i)
            start = i


def next_event(users: Sequence[UserId]) -> np.ndarray:
    """For each event, the index of its user's next event (-1 for the user's last)."""
    out = np.full(len(users), -1, np.int64)
    later: dict[UserId, int] = {}
    for i in range(len(users) - 1, -1, -1):
        out[i] = later.get(users[i], -1)
        later[users[i]] = i
    return out


@dataclass
class ScoredEvents:
    """Per scored event: its time and user, the rank of its item in each variant's held
    list (:data:`ABSENT` when not there), and the ARP of the list's first ``shown_depth``
    items (what the user saw); plus the items shown. The ``candidates`` list is held
    whole, so its rank also tells whether any reranking could have shown the item."""

    shown_depth: int = 10
    variants: tuple[str, ...] = VARIANTS
    ts: list[float] = field(default_factory=list)
    users: list[UserId] = field(default_factory=list)
    rank: dict[str, list[int]] = field(default_factory=dict)
    arp: dict[str, list[float]] = field(default_factory=dict)
    arp_events: list[float] = field(default_factory=list)
    shown: dict[str, set[ItemId]] = field(default_factory=dict)
    train_lists: ListSamples = field(default_factory=ListSamples)
    test_lists: ListSamples = field(default_factory=lambda: ListSamples(keep_missing=True))

    def __post_init__(self) -> None:
        for variant in self.variants:
            self.rank.setdefault(variant, [])
            self.arp.setdefault(variant, [])
            self.shown.setdefault(variant, set())

    def add(self, event: ClickEvent, held: dict[str, dict[UserId, list[ItemId]]], counts: Counter[ItemId]) -> None:
        """Score ``event`` (one with an item) against ``held`` before it is applied."""
        item = event.item_id or ""
        self.ts.append(event.ts.timestamp())
        self.users.append(event.user_id)
        self.arp_events.append(counts[item])
        for variant, lists in held.items():
            items = lists.get(event.user_id, [])
            self.rank[variant].append(items.index(item) if item in items else ABSENT)
            shown = items[: self.shown_depth]
            self.arp[variant].append(float(np.mean([counts[i] for i in shown])) if shown else float("nan"))
            self.shown[variant].update(shown)


def add_held_list(lists: ListSamples, event: ClickEvent, held: Mapping[UserId, tuple[list[ItemId], np.ndarray]],
                  counts: Counter[ItemId] | None = None) -> bool:
    """Record the candidates (and re-ranker inputs) ``event``'s user held before it, with
    each candidate's event count now when ``counts`` is given; a user without a held list
    adds an empty one when ``lists`` keeps missing positives. False when nothing was added."""
    items, inputs = held.get(event.user_id, ([], np.zeros((0, len(input_names())), np.float32)))
    if not items and not lists.keep_missing:
        return False
    seen = None if counts is None else np.fromiter((counts[i] for i in items), np.float64, len(items))
    return lists.add(items, inputs, event.item_id or "", seen)


def add_reranked(scored: ScoredEvents, name: str, scores: Sequence[np.ndarray]) -> None:
    """Add variant ``name``: each scored event's held candidates (``scored.test_lists``)
    ordered by ``scores`` (one array per list, higher first), its first ``shown_depth``
    items shown, as the worker's ``top_k`` would."""
    lists = scored.test_lists
    if len(lists) != len(scored.ts):
        raise ValueError(f"{len(lists)} held candidate lists for {len(scored.ts)} scored events: was the replay collecting?")
    ranks = positive_ranks(lists, scores)
    scored.variants = (*scored.variants, name)
    scored.rank[name] = [int(r) if 0 <= r < scored.shown_depth else ABSENT for r in ranks]
    scored.arp[name], scored.shown[name] = [], set()
    for items, score, counts in zip(lists.items, scores, lists.counts):
        shown = top_k(score, scored.shown_depth)
        scored.arp[name].append(float(counts[shown].mean()) if len(shown) else float("nan"))
        scored.shown[name].update(items[i] for i in shown)


def figures(rank: np.ndarray, k: int) -> dict[str, float]:
    if not len(rank):
        return {f"hr@{k}": float("nan"), f"ndcg@{k}": float("nan"), "mrr": float("nan")}
    return {f"hr@{k}": hit_rate(rank, k), f"ndcg@{k}": ndcg(rank, k), "mrr": mrr(rank, k)}


def summarise(scored: ScoredEvents, catalogue: int, k: int, rows: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Overall figures per variant (``events`` scored, coverage over ``catalogue`` items,
    ``in_list``: the share of events whose item the held list holds at any depth);
    ``rows`` (a bool mask over the scored events) restricts the ranking figures to some."""
    pick = np.ones(len(scored.ts), bool) if rows is None else rows
    table = {}
    for variant in scored.variants:
        rank = np.asarray(scored.rank[variant], np.int64)[pick]
        row = figures(rank, k) | {"in_list": float(np.mean(rank < ABSENT)) if len(rank) else float("nan")}
        arp = np.asarray(scored.arp[variant], np.float64)[pick]
        row |= {"coverage": len(scored.shown[variant]) / max(catalogue, 1),
                "arp": float(np.nanmean(arp)) if np.isfinite(arp).any() else float("nan"), "events": float(pick.sum())}
        table[variant] = row
    return table


def over_time(scored: ScoredEvents, bucket_s: float, k: int) -> dict[str, Any]:
    """Per time bucket (``bucket_s`` wide, from the first scored event): its start (epoch
    s), the events in it, and each variant's HR@k and NDCG@k."""
    ts = np.asarray(scored.ts, np.float64)
    if not len(ts):
        return {"bucket_s": bucket_s, "start": [], "events": [], "variants": {}}
    which = ((ts - ts[0]) // bucket_s).astype(np.int64)
    present = np.unique(which)
    out: dict[str, Any] = {"bucket_s": bucket_s, "start": (ts[0] + present * bucket_s).tolist(),
                           "events": [int((which == b).sum()) for b in present], "variants": {}}
    for variant in scored.variants:
        rank = np.asarray(scored.rank[variant], np.int64)
        per = [figures(rank[which == b], k) for b in present]
        out["variants"][variant] = {key: [p[key] for p in per] for key in per[0]}
    return out


def bucket_for(span_s: float, most: int = 60) -> float:
    """The finest of an hour, a day, a week or 30 days that cuts ``span_s`` into at most
    ``most`` buckets (30 days when none does)."""
    return next((b for b in (3600.0, 86400.0, 7 * 86400.0) if span_s / b <= most), 30 * 86400.0)


class Replay:
    """The worker's state, store and recommenders for one replay. Use as an async
    context manager (closes the recommenders and the store). Coroutines; blocking
    model loads run in a thread."""

    def __init__(self, redis_url: str, models: ModelConfig, cfg: CandidateConfig, top_k: int = 10,
                 features: FeatureConfig | None = None, extra: Mapping[str, CandidateConfig] | None = None,
                 collector: ModelConfig | None = None) -> None:
        """``extra``: more variants ranked by the model, each with its own candidate settings
        (e.g. ``ranker_weight``: models/candidates.py's ``fuse``), beside ``pipeline``.
        ``collector``: the registry whose ranker makes the re-ranker's training lists
        (:meth:`rerank_lists`), one trained before them; default the replay's own."""
        self.features = features or FeatureConfig(project=f"prequential_{uuid.uuid4().hex[:8]}")
        self.store = RedisFeatureStore.from_url(redis_url, self.features)
        self.top_k = top_k
        self.users: dict[UserId, UserState] = {}
        self.items: dict[ItemId, ItemState] = {}
        self.counts: Counter[ItemId] = Counter()
        self._pending: dict[tuple[str, str], FeatureRow] = {}

        def recommender(candidates: CandidateConfig, ranked: bool, model: ModelConfig = models) -> RankingRecommender:
            still = model.model_copy(update={"poll_interval_s": 1e9})  # the model of the replay, never swapped
            watcher = ModelWatcher(still, candidates=candidates) if ranked else None
            return RankingRecommender(self.store, watcher, candidates, top_k=top_k)

        free = variant_configs(cfg)
        self.pipeline = recommender(cfg, True)
        self.collector = recommender(cfg, True, collector) if collector is not None else self.pipeline
        self.baselines = {name: recommender(candidates, False) for name, candidates in free.items()}
        self.ranked = {name: recommender(candidates, True) for name, candidates in (extra or {}).items()}
        self.variants = (*VARIANTS, *self.ranked)

    def model_recommenders(self) -> list[RankingRecommender]:
        return [self.pipeline, *self.ranked.values(), *([self.collector] if self.collector is not self.pipeline else [])]

    async def __aenter__(self) -> Replay:
        for made in self.model_recommenders():
            await made.start()
        if any(made.model_version == "none" for made in self.model_recommenders()):
            raise RuntimeError("no model is promoted in a registry: the pipeline (or the collector) has nothing to rank with")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for made in (*self.model_recommenders(), *self.baselines.values()):
            await made.close()
        await self.store.close()

    def apply(self, events: Sequence[ClickEvent]) -> None:
        """Apply ``events`` as the worker does; their rows wait for :meth:`flush` (the
        last row of an entity wins, as it would in the store)."""
        for event in events:
            update = apply_user_event(self.users.setdefault(event.user_id, UserState()), event, self.features)
            if not isinstance(update, UserUpdate):
                continue
            self._pending[update.row.view, update.row.entity_id] = update.row
            for msg in update.item_messages:
                result = apply_item_event(self.items.setdefault(msg.item_id, ItemState()), msg, self.features)
                if isinstance(result, ItemUpdate):
                    self._pending[result.row.view, result.row.entity_id] = result.row
            if event.item_id is not None:
                self.counts[event.item_id] += 1

    @property
    def pending(self) -> int:
        """Rows applied and not yet written."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write the pending rows in one round trip: lists made after it see every event applied."""
        if self._pending:
            await self.store.write_batch(list(self._pending.values()))
            self._pending.clear()

    async def lists(self, causes: Sequence[ClickEvent]) -> dict[str, dict[UserId, list[ItemId]]]:
        """Each variant's top-k for the users of ``causes`` (one cause per user), as of now."""
        await self.flush()
        requests = [RecommendRequest(e.user_id, self.users[e.user_id], e) for e in causes]
        out: dict[str, dict[UserId, list[ItemId]]] = {}
        for name, made in (*self.baselines.items(), ("pipeline", self.pipeline), *self.ranked.items()):
            ranked = await made.recommend_many(requests)
            out[name] = {r.user_id: [i.item_id for i in got.items] for r, got in zip(requests, ranked)}
        merged = await self.pipeline.candidate_lists(requests)
        out["candidates"] = {r.user_id: cands.item_ids for r, cands in zip(requests, merged)}  # whole: see ScoredEvents
        return out

    async def rerank_lists(self, causes: Sequence[ClickEvent], training: bool) -> dict[UserId, tuple[list[ItemId], np.ndarray]]:
        """The pipeline's candidates and the re-ranker's inputs for the users of ``causes``, as
        of now: with the collector's ranker for ``training`` lists, else the pipeline's."""
        await self.flush()
        requests = [RecommendRequest(e.user_id, self.users[e.user_id], e) for e in causes]
        made = await (self.collector if training else self.pipeline).rerank_inputs(requests)
        return {r.user_id: (cands.item_ids, inputs) for r, (cands, inputs) in zip(requests, made)}


async def replay(events: Sequence[ClickEvent], start: int, run: Replay, window_s: float = 1.0,
                 progress: bool = True, collect_from: int | None = None) -> ScoredEvents:
    """Score every event from index ``start`` on against its user's held lists, then
    apply it; ``events`` in event-time order. With ``collect_from``, also the re-ranker's
    training lists (events ``collect_from`` to ``start``) and the scored events' held
    candidates (see the module's doc)."""
    ts = [e.ts.timestamp() for e in events]
    following = next_event([e.user_id for e in events])
    collecting = collect_from is not None
    first = min(collect_from, start) if collect_from is not None else start
    held: dict[str, dict[UserId, list[ItemId]]] = {v: {} for v in run.variants}
    held_inputs: dict[UserId, tuple[list[ItemId], np.ndarray]] = {}
    scored = ScoredEvents(shown_depth=run.top_k, variants=run.variants)
    bar = tqdm(total=len(events), unit="ev", desc="prequential replay", disable=not progress, smoothing=0.05)
    for batch in batches(ts, window_s):
        for i in batch:
            if events[i].item_id is None:  # a search has no item to hit
                continue
            if i >= start:
                scored.add(events[i], held, run.counts)
                if collecting:
                    add_held_list(scored.test_lists, events[i], held_inputs, run.counts)
            elif i >= first:
                add_held_list(scored.train_lists, events[i], held_inputs)
        run.apply([events[i] for i in batch])
        last = {events[i].user_id: i for i in batch}
        causes = [events[i] for i in last.values() if following[i] >= start]
        learn = [events[i] for i in last.values() if first <= following[i] < start] if collecting else []
        if causes:
            for variant, lists in (await run.lists(causes)).items():
                held[variant].update(lists)
            if collecting:
                held_inputs.update(await run.rerank_lists(causes, training=False))
        if learn:
            held_inputs.update(await run.rerank_lists(learn, training=True))
        elif not causes and run.pending >= FLUSH_ROWS:
            await run.flush()
        bar.update(len(batch))
        if collecting:
            bar.set_postfix(train_lists=len(scored.train_lists), refresh=False)
    bar.close()
    if any(made.scoring_errors for made in run.model_recommenders()):
        raise RuntimeError(f"the model failed to score {run.pipeline.scoring_errors} batches: the pipeline figures would mix in the heuristic")
    return scored
