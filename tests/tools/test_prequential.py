"""Prequential replay: the batching and bookkeeping as pure functions, and a crafted
replay through the worker's code on a real redis-server with a real trained ranker."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.features.messages import ClickEvent, EventType
from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig, TrainConfig
from streamrec.models.datasets import Dataset
from streamrec.models.pipeline import train_and_publish
from streamrec.models.reranker import input_names
from streamrec.tools.prequential import (ABSENT, VARIANTS, Replay, ScoredEvents, add_reranked, batches, bucket_for, next_event,
                                         over_time, replay, summarise)
from streamrec.tools.quality import redis_for

FAST = TrainConfig(epochs=2, embedding_dim=8, hidden=(16,), batch_size=256, threads=1, patience=1)
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_a_batch_spans_the_window_from_its_first_event() -> None:
    ts = [0.0, 0.4, 0.9, 1.0, 1.2, 5.0]

    assert [list(b) for b in batches(ts, window_s=1.0)] == [[0, 1, 2], [3, 4], [5]]
    assert [len(b) for b in batches([0.0] * 5, window_s=1.0, batch_max=2)] == [2, 2, 1]


def test_next_event_points_at_the_same_users_next_event() -> None:
    assert next_event(["a", "b", "a", "c", "b", "a"]).tolist() == [2, 4, 5, -1, -1, -1]


def test_bucket_is_the_finest_that_keeps_sixty_or_fewer() -> None:
    assert bucket_for(10 * 3600) == 3600
    assert bucket_for(20 * 86400) == 86400
    assert bucket_for(5 * 365 * 86400) == 30 * 86400


def test_summary_and_over_time_from_ranks() -> None:
    scored = ScoredEvents(ts=[0.0, 10.0, 3700.0, 3800.0])
    scored.rank = {v: [0, ABSENT, 4, ABSENT] for v in VARIANTS}
    scored.arp = {v: [1.0, 2.0, 3.0, float("nan")] for v in VARIANTS}
    scored.shown = {v: {"x", "y"} for v in VARIANTS}

    row = summarise(scored, catalogue=8, k=10)["pipeline"]
    series = over_time(scored, 3600.0, 10)

    assert row["hr@10"] == 0.5 and row["mrr"] == pytest.approx((1 + 1 / 5) / 4) and row["in_list"] == 0.5
    assert row["coverage"] == 0.25 and row["arp"] == 2.0
    assert series["events"] == [2, 2] and series["variants"]["covisit"]["hr@10"] == [0.5, 0.5]


def test_a_list_is_ranked_whole_but_only_its_first_items_count_as_shown() -> None:
    scored = ScoredEvents(shown_depth=2)
    held = {v: {"u": ["a", "b", "c", "d"]} for v in VARIANTS}
    event = ClickEvent(event_id="e", user_id="u", item_id="d", type=EventType.CLICK, ts=T0)

    scored.add(event, held, Counter({"a": 4, "b": 2, "d": 9}))

    assert scored.rank["candidates"] == [3] and scored.shown["pipeline"] == {"a", "b"}
    assert scored.arp["covisit"] == [3.0] and scored.arp_events == [9]
    assert summarise(scored, catalogue=4, k=2)["candidates"]["hr@2"] == 0.0
    assert summarise(scored, catalogue=4, k=2)["candidates"]["in_list"] == 1.0


def click(user: str, item: str, minute: float) -> ClickEvent:
    return ClickEvent(event_id=f"{user}-{item}-{minute}", user_id=user, item_id=item, type=EventType.CLICK,
                      ts=T0 + timedelta(minutes=minute))


def crafted() -> tuple[list[ClickEvent], int]:
    """Warm-up: 12 filler items each clicked by 30 users (the popular ones), and 20 users
    who click p1 and then p2 (so p2's row lists p1 as its co-visitor: the event's item
    learns the items visited before it). Scored: 5 newcomers who click p2, then p1."""
    warm = [click(f"f{u}", f"f{i}", 0.01 * (u * 12 + i)) for u in range(30) for i in range(12)]
    warm += [e for u in range(20) for e in (click(f"w{u}", "p1", 10 + u), click(f"w{u}", "p2", 10.5 + u))]
    scored = [e for u in range(5) for e in (click(f"n{u}", "p2", 40 + u), click(f"n{u}", "p1", 40.5 + u))]
    return warm + scored, len(warm)


def frame_of(events: list[ClickEvent]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [e.user_id for e in events], "item_id": [e.item_id for e in events],
                         "rating": np.nan, "ts": [int(e.ts.timestamp()) for e in events]})


def crafted_replay(tmp_path: Path, collect_from: int | None = None) -> ScoredEvents:
    """The crafted events replayed through the worker's code, a small ranker trained on the warm-up."""
    events, start = crafted()
    models = ModelConfig(registry_dir=tmp_path / "registry", train=FAST)
    train_and_publish(Dataset("crafted", frame_of(events[:start]), explicit=False), models, promote=True, progress=False)

    async def run(url: str) -> ScoredEvents:
        async with Replay(url, models, CandidateConfig(max_candidates=20, covisit=10, embedding=5, popular_depth=40)) as live:
            return await replay(events, start, live, window_s=1.0, progress=False, collect_from=collect_from)

    with redis_for(None) as url:
        return asyncio.run(run(url))


@pytest.mark.integration
def test_each_event_is_scored_against_the_list_its_user_held_before_it(tmp_path: Path) -> None:
    scored = crafted_replay(tmp_path)

    first, second = slice(0, None, 2), slice(1, None, 2)  # each newcomer's p2, then p1
    assert len(scored.ts) == 10
    for variant in VARIANTS:
        assert set(scored.rank[variant][first]) == {ABSENT}  # no list before a user's first event
    assert scored.rank["covisit"][second] == [0] * 5  # p1 is p2's co-visitor
    assert scored.rank["candidates"][second] == [0] * 5
    assert set(scored.rank["popularity"][second]) == {ABSENT}  # twelve items are more popular than p1
    assert all(rank < 10 for rank in scored.rank["pipeline"][second])  # the ranker keeps it in the top 10
    assert "p2" not in scored.shown["pipeline"] | scored.shown["covisit"]  # a user's seen item is never shown back


@pytest.mark.integration
def test_a_collecting_replay_holds_the_rerankers_lists_and_scores_a_reranked_variant(tmp_path: Path) -> None:
    scored = crafted_replay(tmp_path, collect_from=360)  # the warm users' clicks of p1 and p2

    train, test = scored.train_lists, scored.test_lists
    # the warm users' p2 events, held after their p1 (their p1 had no list before it)
    assert 0 < len(train) <= 20 and all(items[pos] == "p2" for items, pos in zip(train.items, train.positive))
    # an implicit model is published with EASE neighbours: the lists hold that source and its inputs
    assert all(x.shape == (len(items), len(input_names(ease=True))) for items, x in zip(train.items, train.inputs))
    assert len(test) == 10 and test.items[0] == [] and test.positive[0] == -1  # no list before a user's first event
    assert test.positive[1::2] == scored.rank["candidates"][1::2] == [0] * 5 and len(test.counts[1]) == len(test.items[1])
    by_merge_order = [-np.arange(len(items), dtype=np.float32) for items in test.items]
    add_reranked(scored, "merge order", by_merge_order)  # ordering by merge position is the candidates' list
    assert scored.rank["merge order"] == [r if r < 10 else ABSENT for r in scored.rank["candidates"]]
    assert scored.shown["merge order"] <= set().union(*map(set, test.items))


@pytest.mark.integration
def test_a_collector_without_a_model_is_refused(tmp_path: Path) -> None:
    events, start = crafted()
    models = ModelConfig(registry_dir=tmp_path / "registry", train=FAST)
    train_and_publish(Dataset("crafted", frame_of(events[:start]), explicit=False), models, promote=True, progress=False)

    async def run(url: str) -> None:
        async with Replay(url, models, CandidateConfig(max_candidates=20, covisit=10, embedding=5, popular_depth=40),
                          collector=ModelConfig(registry_dir=tmp_path / "empty")):
            pass

    with redis_for(None) as url, pytest.raises(RuntimeError, match="the collector"):
        asyncio.run(run(url))
