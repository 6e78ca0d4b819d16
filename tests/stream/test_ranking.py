"""RankingRecommender on a real redis-server, features written by the worker's own
update functions and writer, and a small real ranker trained, exported and promoted
through the models package."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import ITEM_VIEW, USER_VIEW
from streamrec.features.user_state import UserState
from streamrec.models.candidates import CandidateConfig, fuse, top_k
from streamrec.models.config import ModelConfig, TrainConfig
from streamrec.models.datasets import synthetic
from streamrec.models.ease_neighbours import attach_ease_neighbours
from streamrec.models.item_vectors import load_item_vectors
from streamrec.models.pipeline import train_and_publish
from streamrec.models.registry import METADATA, ModelRegistry
from streamrec.models.rerank_training import RerankNet, export_reranker
from streamrec.models.reranker import CONTEXT, RERANKER, input_names
from streamrec.models.scorer import ScoreBatch
from streamrec.models.watcher import ModelWatcher
from streamrec.models.serving import FeaturePlan
from streamrec.stream.ranking import RankingRecommender
from streamrec.tools.bench_ranking import bench_events, replay_events
from streamrec.stream.recommend import RecommendRequest

pytestmark = pytest.mark.integration

FAST = TrainConfig(epochs=3, embedding_dim=8, hidden=(16,), batch_size=256, threads=1, patience=2)
T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@dataclass
class World:
    redis_url: str
    features: FeatureConfig
    models: ModelConfig
    version: str
    item_vectors: np.ndarray  # the trained model's item embedding table
    states: dict[str, UserState]


def click(user: str, item: str, minute: int) -> ClickEvent:
    return ClickEvent(event_id=f"{user}-{item}-{minute}", user_id=user, item_id=item, type=EventType.CLICK, ts=T0 + timedelta(minutes=minute))


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    data = synthetic(n_users=80, n_items=60, n_events=3000, seed=5)
    models = ModelConfig(registry_dir=tmp_path_factory.mktemp("registry"), train=FAST)
    trained = train_and_publish(data, models, promote=True, progress=False)
    features = FeatureConfig(project=f"rank_{uuid.uuid4().hex[:8]}", top_min_count=1)
    # bob and carol each visit another item, then i1: i1 learns them as co-visitors
    crafted = [click("bob", "i7", 0), click("bob", "i1", 1), click("carol", "i9", 2), click("carol", "i1", 3), click("alice", "i1", 10)]

    async def load() -> dict[str, UserState]:
        store = RedisFeatureStore.from_url(redis_url, features)
        try:
            return await replay_events(store, bench_events(data.interactions) + crafted, features)
        finally:
            await store.close()

    states = asyncio.run(load())
    table = trained.model.net.mf.item_vec.weight.detach().numpy()
    return World(redis_url, features, models, trained.version, table, states)


def request(world: World, user: str) -> RecommendRequest:
    state = world.states.get(user, UserState())
    item = state.recent[0].item_id if state.recent else "i0"
    return RecommendRequest(user, state, ClickEvent(event_id=f"cause-{user}", user_id=user, item_id=item, type=EventType.VIEW, ts=T0))


@dataclass
class Parts:
    """A store for the test and a factory of recommenders, all closed at teardown."""

    world: World
    store: RedisFeatureStore
    made: list[RankingRecommender]

    async def recommender(self, models: ModelConfig | None = None, ranker_weight: float = 1.0, ease: int = 10,
                          **options: object) -> RankingRecommender:
        cfg = CandidateConfig(max_candidates=30, ease=ease, covisit=10, embedding=10, popular_depth=60, ranker_weight=ranker_weight)
        made = RankingRecommender(self.store, ModelWatcher(models or self.world.models, candidates=cfg), cfg, top_k=30, **options)  # type: ignore[arg-type]
        self.made.append(made)
        await made.start()
        return made


@pytest.fixture()
async def parts(world: World) -> AsyncIterator[Parts]:
    made = Parts(world, RedisFeatureStore.from_url(world.redis_url, world.features), [])
    yield made
    for ranking in made.made:
        await ranking.close()
    await made.store.close()


async def test_covisitation_neighbours_are_ranked_by_the_promoted_model(world: World, parts: Parts) -> None:
    ranking = await parts.recommender()

    [ranked] = await ranking.recommend_many([request(world, "alice")])

    sources = {item.item_id: item.source for item in ranked.items}
    assert sources.get("i7") == sources.get("i9") == "covisit"
    assert "i1" not in sources  # seen
    assert ranking.model_version == world.version
    assert ranking.provider.startswith("CPUExecutionProvider")
    assert set(ranked.stage_ms) == {"candidates", "features", "scoring"} and min(ranked.stage_ms.values()) > 0
    expected = await independent_scores(world, parts.store, "alice", [item.item_id for item in ranked.items])
    scores = [item.score for item in ranked.items]
    assert np.allclose(scores, expected, atol=1e-5)
    assert scores == sorted(scores, reverse=True)


async def test_by_default_the_list_fuses_the_model_order_with_the_merge_order(world: World, parts: Parts) -> None:
    ranking = await parts.recommender(ranker_weight=CandidateConfig().ranker_weight)
    assert 0 < ranking.cfg.ranker_weight < 1

    [ranked] = await ranking.recommend_many([request(world, "alice")])
    [merged] = await ranking.candidate_lists([request(world, "alice")])

    model = await independent_scores(world, parts.store, "alice", merged.item_ids)
    fused = fuse(model, ranking.cfg.ranker_weight, ranking.cfg.fusion_k)
    assert [item.item_id for item in ranked.items] == [merged.item_ids[i] for i in top_k(fused, len(ranked.items))]
    assert [item.item_id for item in ranked.items] != [merged.item_ids[i] for i in top_k(model, len(ranked.items))]
    scores = [item.score for item in ranked.items]
    assert scores == sorted(scores, reverse=True)


async def independent_scores(world: World, store: RedisFeatureStore, user: str, items: list[str]) -> np.ndarray:
    """The promoted model's scores, from whole feature rows read view by view."""
    watcher = ModelWatcher(world.models)
    watcher.poll()
    scorer, _ = watcher.current()
    [user_row] = await store.read_batch(USER_VIEW, [user])
    item_rows = await store.read_batch(ITEM_VIEW, items)
    prefixed = [{f"{ITEM_VIEW}:{k}": v for k, v in row.items()} for row in item_rows]
    batch = ScoreBatch.for_user(user, items, {f"{USER_VIEW}:{k}": v for k, v in user_row.items()}, prefixed, scorer.feature_names)
    # a ranker+recent model reads the user's recent items: here from the user's stored row
    recent = {user: list(user_row.get("recent_items") or [])}
    return scorer.score(ScoreBatch(batch.user_ids, batch.item_ids, batch.dense, recent))


async def test_a_batch_is_ranked_per_request_in_order_and_batch_scoring_changes_nothing(world: World, parts: Parts) -> None:
    users = ["alice", "u1", "u2", "newcomer", "u1"]
    one_call, per_request = await parts.recommender(), await parts.recommender(batch_scoring=False)

    together = await one_call.recommend_many([request(world, u) for u in users])
    apart = await per_request.recommend_many([request(world, u) for u in users])

    assert len(together) == len(users)
    for mine, theirs in zip(together, apart):
        assert [i.item_id for i in mine.items] == [i.item_id for i in theirs.items]
        assert np.allclose([i.score for i in mine.items], [i.score for i in theirs.items], atol=1e-5)
    assert together[1].items == together[4].items
    seen = await parts.store.candidate_inputs([], ["u1"], 1)
    assert not {i.item_id for i in together[1].items} & seen.seen["u1"]


async def test_a_new_user_gets_popular_candidates_ranked_by_the_model(world: World, parts: Parts) -> None:
    ranking = await parts.recommender()

    [ranked] = await ranking.recommend_many([request(world, "newcomer")])

    assert len(ranked.items) == 30
    assert {item.source for item in ranked.items} == {"popular"}
    assert ranking.model_version == world.version


async def test_without_a_promoted_model_the_heuristic_ranks_and_the_version_is_none(world: World, parts: Parts, tmp_path: Path) -> None:
    ranking = await parts.recommender(ModelConfig(registry_dir=tmp_path / "empty"))

    [ranked] = await ranking.recommend_many([request(world, "alice")])

    assert ranking.model_version == "none" and ranking.provider == "none"
    assert [item.source for item in ranked.items[:2]] == ["covisit", "covisit"]
    assert ranked.stage_ms["features"] == 0.0


def copy_version(world: World, root: Path, suffix: str, **changes: object) -> str:
    """A second version in ``root``: the world's artifact under another name (same files)."""
    if not root.exists():
        shutil.copytree(world.models.registry_dir, root)
    version = world.version + suffix
    shutil.copytree(root / "versions" / world.version, root / "versions" / version)
    meta = root / "versions" / version / METADATA
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": version, **changes}))
    return version


async def test_the_versions_ease_neighbours_are_served_first_unless_switched_off(world: World, parts: Parts, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    version = copy_version(world, root, "-ease")
    taken_together = pd.DataFrame([(u, i) for u in range(10) for i in ("i1", "i42")] + [(u, i) for u in range(10, 20) for i in ("i3", "i4")],
                                  columns=["user_id", "item_id"])
    attach_ease_neighbours(ModelRegistry(root), version, taken_together, l2=1.0, neighbours=1)
    ModelRegistry(root).promote(version)

    [served] = await (await parts.recommender(ModelConfig(registry_dir=root))).candidate_lists([request(world, "alice")])
    [off] = await (await parts.recommender(ModelConfig(registry_dir=root), ease=0)).candidate_lists([request(world, "alice")])

    assert served.blocks[0] == ("ease", 1) and served.item_ids[0] == "i42"  # alice's only item is i1
    assert off.blocks[0][0] == "covisit" and "ease" not in off.sources()


async def test_a_promoted_version_is_picked_up_without_a_restart(world: World, parts: Parts, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    second = copy_version(world, root, "-b")
    ranking = await parts.recommender(ModelConfig(registry_dir=root, poll_interval_s=0.01))

    ModelRegistry(root).promote(second)
    for _ in range(200):
        await ranking.recommend_many([request(world, "alice")])
        if ranking.model_version == second:
            break
        await asyncio.sleep(0.02)

    assert ranking.model_version == second


def test_item_vectors_come_from_the_artifact_in_the_metadata_item_order(world: World) -> None:
    registry = ModelRegistry(world.models.registry_dir)

    vectors = load_item_vectors(registry, world.version)

    assert vectors is not None
    assert vectors.ids == registry.metadata(world.version)["items"]
    table = world.item_vectors[1:]
    assert np.allclose(vectors.matrix, table / np.linalg.norm(table, axis=1, keepdims=True), atol=1e-6)


async def test_a_model_reading_features_the_store_lacks_is_refused_and_the_old_one_serves(world: World, parts: Parts, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    features = ModelRegistry(world.models.registry_dir).metadata(world.version)["features"]
    bad = copy_version(world, root, "-bad", features=features[:-1] + ["item_features:no_such_feature"])
    ranking = await parts.recommender(ModelConfig(registry_dir=root))

    ModelRegistry(root).promote(bad)
    now = await ranking.refresh()
    [ranked] = await ranking.recommend_many([request(world, "alice")])

    assert now == world.version == ranking.model_version
    assert ranked.items and ranked.stage_ms["scoring"] > 0


def test_the_feature_plan_puts_online_values_in_the_models_column_order() -> None:
    plan = FeaturePlan(["item_features:n_rating", "user_features:rating_mean", "item_features:rating_mean"])
    users = [{"rating_mean": 4.0}, {"rating_mean": None}]
    items = [{"n_rating": 3, "rating_mean": 2.5}, {"n_rating": 0, "rating_mean": None}]

    dense = plan.dense(users, items, np.array([0, 1, 1]), np.array([1, 0, 1]))

    expected = np.array([[0, 4.0, np.nan], [3, np.nan, 2.5], [0, np.nan, np.nan]], np.float32)
    assert np.array_equal(dense, expected, equal_nan=True)
    assert FeaturePlan(["item_features:n_rating"]).item_request(["i"]).entity_ids == ["i"]
    assert FeaturePlan(["user_features:rating_mean"]).item_request(["i"]).entity_ids == []


def test_a_model_feature_the_online_views_lack_is_named() -> None:
    with pytest.raises(ValueError, match="item_features:covisit_items"):
        FeaturePlan(["item_features:covisit_items"])
    with pytest.raises(ValueError, match="user_features:nope"):
        FeaturePlan(["user_features:nope"])


def attach_position_reranker(world: World, root: Path, suffix: str) -> tuple[str, RerankNet]:
    """A copy of the world's version with a linear re-ranker that scores a candidate by
    its log merge position only: it lists the candidates last first."""
    version = copy_version(world, root, suffix)
    width = len(input_names())
    net = RerankNet(np.zeros(width), np.ones(width), hidden=0)
    with torch.no_grad():
        net.net.weight.zero_()  # type: ignore[operator]
        net.net.weight[0, input_names().index("log_position")] = 1.0  # type: ignore[index]
        net.net.bias.zero_()  # type: ignore[operator]
    export_reranker(net, root / "reranker.onnx", np.random.default_rng(0).normal(size=(8, width)).astype(np.float32))
    ModelRegistry(root).attach(version, RERANKER, root / "reranker.onnx", {"inputs": list(input_names()), "context": list(CONTEXT)})
    ModelRegistry(root).promote(version)
    return version, net


async def test_a_version_with_a_reranker_orders_the_lists_by_it(world: World, parts: Parts, tmp_path: Path) -> None:
    version, _ = attach_position_reranker(world, tmp_path / "registry", "-rr")
    ranking = await parts.recommender(ModelConfig(registry_dir=tmp_path / "registry"), ranker_weight=0.5)

    [ranked] = await ranking.recommend_many([request(world, "alice")])
    [merged] = await ranking.candidate_lists([request(world, "alice")])
    [(cands, inputs)] = await ranking.rerank_inputs([request(world, "alice")])

    assert ranking.model_version == version and len(merged) == 30
    assert [item.item_id for item in ranked.items] == merged.item_ids[::-1]  # not the fusion's order
    assert cands.item_ids == merged.item_ids and inputs.shape == (30, len(input_names()))
    assert np.allclose([item.score for item in ranked.items], np.log1p(np.arange(30))[::-1], atol=1e-5)


@pytest.mark.parametrize("why", ["tampered", "switched off"])
async def test_a_reranker_tampered_with_or_switched_off_leaves_the_fusion_ordering(world: World, parts: Parts, tmp_path: Path,
                                                                                   why: str) -> None:
    root = tmp_path / "registry"
    version, _ = attach_position_reranker(world, root, "-bad-rr")
    if why == "tampered":
        (root / "versions" / version / "reranker.onnx").write_bytes(b"not a graph")
    ranking = await parts.recommender(ModelConfig(registry_dir=root, rerank=why == "tampered"), ranker_weight=0.5)

    [ranked] = await ranking.recommend_many([request(world, "alice")])
    [merged] = await ranking.candidate_lists([request(world, "alice")])

    model = await independent_scores(world, parts.store, "alice", merged.item_ids)
    fused = fuse(model, 0.5, ranking.cfg.fusion_k)
    assert ranking.model_version == version
    assert [item.item_id for item in ranked.items] == [merged.item_ids[i] for i in top_k(fused, 30)]


class CountingStore:
    """The test's store, counting what the ranking reads: item rows, co-visitor lists and popular reads."""

    def __init__(self, store: RedisFeatureStore) -> None:
        self.store = store
        self.item_rows = self.covisitors = self.popular = 0

    async def read_many(self, requests):  # type: ignore[no-untyped-def]
        self.item_rows += sum(len(r.entity_ids) for r in requests)
        return await self.store.read_many(requests)

    async def candidate_inputs(self, items, users, popular_depth):  # type: ignore[no-untyped-def]
        self.covisitors += len(items)
        self.popular += popular_depth > 0
        return await self.store.candidate_inputs(items, users, popular_depth)

    def reads(self) -> tuple[int, int, int]:
        return self.item_rows, self.covisitors, self.popular

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


async def near_cached(world: World, parts: Parts, near_cache_ms: float) -> tuple[RankingRecommender, CountingStore]:
    plain = await parts.recommender()
    counting = CountingStore(parts.store)
    cached = RankingRecommender(counting, ModelWatcher(world.models, candidates=plain.cfg), plain.cfg,  # type: ignore[arg-type]
                                top_k=30, near_cache_ms=near_cache_ms)
    parts.made.append(cached)
    await cached.start()
    return cached, counting


async def test_the_near_cache_reads_items_once_in_its_window_and_changes_no_list(world: World, parts: Parts) -> None:
    users = ["alice", "u1", "u2", "newcomer", "u1"]
    plain = await parts.recommender()
    cached, counting = await near_cached(world, parts, near_cache_ms=60_000)

    first = await cached.recommend_many([request(world, u) for u in users])
    reads = counting.reads()
    again = await cached.recommend_many([request(world, u) for u in users])
    expected = await plain.recommend_many([request(world, u) for u in users])

    assert reads[0] > 0 and reads[1] > 0 and reads[2] == 1
    assert counting.reads() == reads  # the second batch read no item row, co-visitor list or popular item
    for mine, repeat_, theirs in zip(first, again, expected):
        ids = [item.item_id for item in theirs.items]
        assert [item.item_id for item in mine.items] == [item.item_id for item in repeat_.items] == ids
        assert np.allclose([item.score for item in mine.items], [item.score for item in theirs.items], atol=1e-6)


async def test_what_the_near_cache_holds_is_read_again_once_older_than_its_window(world: World, parts: Parts) -> None:
    cached, counting = await near_cached(world, parts, near_cache_ms=50)

    await cached.recommend_many([request(world, "alice")])
    reads = counting.reads()
    await asyncio.sleep(0.1)
    await cached.recommend_many([request(world, "alice")])

    assert counting.reads() == (2 * reads[0], 2 * reads[1], 2)
