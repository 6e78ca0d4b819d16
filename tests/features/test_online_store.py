from __future__ import annotations

import pytest

from streamrec.features.config import FeatureConfig
from streamrec.features.formulas import decayed_rank_score
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.messages import EventType
from streamrec.features.online import ReadRequest, RedisFeatureStore
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, FeatureRow
from streamrec.features.user_state import ItemMsg

pytestmark = pytest.mark.integration


def _item_row(item: str, ratings: list[float], cfg: FeatureConfig, ts_ms: int = 1_000_000) -> FeatureRow:
    state = ItemState()
    for n, rating in enumerate(ratings):
        msg = ItemMsg(msg_id=f"{item}-{n}", item_id=item, ts_ms=ts_ms + n, event_type=EventType.RATING, rating=rating)
        apply_item_event(state, msg, cfg)
    return FeatureRow(ITEM_VIEW, item, state.features(cfg), ts_ms + len(ratings))


async def test_rows_round_trip_and_last_write_wins(store: RedisFeatureStore, features_cfg: FeatureConfig) -> None:
    older = _item_row("i1", [1.0, 2.0], features_cfg)
    newer = _item_row("i1", [5.0], features_cfg, ts_ms=1)  # an older timestamp still overwrites
    await store.write_batch([older])
    await store.write_batch([newer])
    [row] = await store.read_batch(ITEM_VIEW, ["i1"])
    assert row == newer.values
    assert await store.read_row_timestamps(ITEM_VIEW, ["i1", "nope"]) == [newer.event_ts_ms, None]


async def test_read_many_reads_several_views_in_order(store: RedisFeatureStore, features_cfg: FeatureConfig) -> None:
    await store.write_batch([_item_row("i1", [4.0], features_cfg), _item_row("i2", [2.0], features_cfg)])
    users, items = await store.read_many(
        [ReadRequest(USER_VIEW, ["u-none"], ["rating_mean"]), ReadRequest(ITEM_VIEW, ["i2", "i1"], ["rating_mean"])]
    )
    assert users == [{"rating_mean": None}]
    assert items == [{"rating_mean": 2.0}, {"rating_mean": 4.0}]


async def test_top_items_by_mean_needs_the_minimum_count(store: RedisFeatureStore, features_cfg: FeatureConfig) -> None:
    assert features_cfg.top_min_count == 2
    rows = [
        _item_row("good", [5.0, 4.0], features_cfg),
        _item_row("ok", [3.0, 3.0, 3.0], features_cfg),
        _item_row("lonely", [5.0], features_cfg),
    ]
    await store.write_batch(rows)
    assert await store.top_items_by_mean(10) == [("good", 4.5), ("ok", 3.0)]


async def test_top_items_by_popularity_follows_decay(store: RedisFeatureStore, features_cfg: FeatureConfig) -> None:
    half_life = int(features_cfg.half_life_ms)
    old_busy = _item_row("old", [3.0] * 4, features_cfg, ts_ms=0)  # weight 12 then 3 half-lives
    new_quiet = _item_row("new", [3.0], features_cfg, ts_ms=3 * half_life)  # weight 3
    await store.write_batch([old_busy, new_quiet])
    assert await store.top_items_by_popularity(2) == ["new", "old"]
    assert decayed_rank_score(12.0, 0, half_life) < decayed_rank_score(3.0, 3 * half_life, half_life)


async def test_seen_items_collect_every_touched_item(store: RedisFeatureStore) -> None:
    rows = [
        FeatureRow(USER_VIEW, "u1", {"event_count": 1}, 1, touched=("a",)),
        FeatureRow(USER_VIEW, "u1", {"event_count": 2}, 2, touched=("b", "a")),
    ]
    await store.write_batch(rows)
    assert await store.seen_items("u1") == {"a", "b"}
    assert await store.seen_items("u2") == set()


async def test_seen_items_keep_only_the_newest_and_ignore_rewrites(features_redis_url: str) -> None:
    cfg = FeatureConfig(project="streamrec_seen", seen_max_items=3)
    store = RedisFeatureStore.from_url(features_redis_url, cfg)
    try:
        rows = [FeatureRow(USER_VIEW, "u1", {"event_count": n}, 100 + n, touched=(f"i{n}",)) for n in range(6)]
        await store.write_batch(rows)
        assert await store.seen_items("u1") == {"i3", "i4", "i5"}
        await store.write_batch(rows[:4])  # a replay of older rows: i3 keeps its time, the old ones stay out
        assert await store.seen_items("u1") == {"i3", "i4", "i5"}
        await store.write_batch([FeatureRow(USER_VIEW, "u1", {"event_count": 7}, 200, touched=("i0",))])
        assert await store.seen_items("u1") == {"i0", "i4", "i5"}  # seen again: newest now, i3 the oldest
    finally:
        await store._client.delete(store.keys.seen("u1"))
        await store.close()


async def test_candidate_inputs_read_covisitors_popular_and_seen_in_one_call(store: RedisFeatureStore,
                                                                           features_cfg: FeatureConfig) -> None:
    row = _item_row("i1", [4.0], features_cfg)
    covisited = FeatureRow(ITEM_VIEW, "i1", {**row.values, "covisit_items": ["i2", "i3"], "covisit_weights": [2.0, 1.0]}, 1)
    await store.write_batch([covisited, FeatureRow(USER_VIEW, "u1", {"event_count": 1}, 1, touched=("i1",))])

    inputs = await store.candidate_inputs(["i1", "unknown"], ["u1", "u2"], popular_depth=5)

    assert inputs.neighbours == {"i1": (["i2", "i3"], [2.0, 1.0]), "unknown": ([], [])}
    assert inputs.seen == {"u1": {"i1"}, "u2": set()}
    assert inputs.popular == await store.top_items_by_popularity(5) != []
    without_popular = await store.candidate_inputs(["i1"], ["u1"], popular_depth=0)  # the near cache holds them
    assert without_popular.popular == [] and without_popular.seen == {"u1": {"i1"}}
    assert without_popular.neighbours == {"i1": (["i2", "i3"], [2.0, 1.0])}


async def test_a_workers_marker_is_its_own(store: RedisFeatureStore) -> None:
    assert not await store.marker_present("w1")
    await store.set_marker("w1")
    assert await store.marker_present("w1") and not await store.marker_present("w2")
