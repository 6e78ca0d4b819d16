from __future__ import annotations

import json
import random

import pytest
from tests.features.feature_strategies import ITEM_TYPES, ITEMS, exact_mean
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState, ItemUpdate, Neighbours, apply_item_event
from streamrec.features.messages import EVENT_TYPES, EventType, ItemMsg
from streamrec.features.user_state import Skipped

CFG = FeatureConfig(half_life_s=3600, ratio_prior_weight=5, click_view_prior=0.2, purchase_view_prior=0.05)


@st.composite
def item_messages(draw: st.DrawFn, max_size: int = 40) -> list[ItemMsg]:
    """Messages for item i0: its own events and co-visit-only messages, increasing time."""
    out, ts = [], 1_700_000_000_000
    for n in range(draw(st.integers(1, max_size))):
        ts += draw(st.sampled_from([0, 1000, 600_000, 3_600_000]))
        covisited = draw(st.lists(st.sampled_from(ITEMS[1:]), max_size=3, unique=True))
        kind = draw(st.sampled_from([None, *ITEM_TYPES]))
        rating = draw(st.integers(0, 10)) / 2 if kind is EventType.RATING else None
        out.append(ItemMsg(msg_id=f"e{n}", item_id="i0", ts_ms=ts, event_type=kind, rating=rating, covisited=covisited))
    return out


def _apply_all(msgs: list[ItemMsg], cfg: FeatureConfig = CFG) -> ItemState:
    state = ItemState()
    for msg in msgs:
        apply_item_event(state, msg, cfg)
    return state


@given(item_messages())
def test_counts_mean_popularity_and_ratios_equal_direct_recomputation(msgs: list[ItemMsg]) -> None:
    row = _apply_all(msgs).features(CFG)
    own = [m for m in msgs if m.event_type is not None]
    for t in EVENT_TYPES:
        assert row[f"n_{t}"] == sum(m.event_type is not None and m.event_type.value == t for m in own)
    assert row["rating_mean"] == pytest.approx(exact_mean([m.rating for m in own if m.rating is not None]))
    if own:
        ref = max(m.ts_ms for m in own)
        direct = sum(CFG.affinity_weights[m.event_type.value] * 2 ** (-(ref - m.ts_ms) / CFG.half_life_ms) for m in own)  # type: ignore[union-attr]
        assert (row["popularity_ref_ms"], row["popularity"]) == (ref, pytest.approx(direct))
    views, clicks, buys = (sum(m.event_type is t for m in own) for t in (EventType.VIEW, EventType.CLICK, EventType.PURCHASE))
    assert row["click_view_ratio"] == pytest.approx((clicks + 0.2 * 5) / (views + 5))
    assert row["purchase_view_ratio"] == pytest.approx((buys + 0.05 * 5) / (views + 5))


@given(item_messages())
def test_covisit_weights_count_co_occurrences(msgs: list[ItemMsg]) -> None:
    row = _apply_all(msgs).features(CFG)
    counts: dict[str, float] = {}
    for m in msgs:
        for other in m.covisited:
            counts[other] = counts.get(other, 0) + 1
    published = list(zip(row["covisit_items"], row["covisit_weights"]))  # type: ignore[arg-type]
    assert dict(published) == counts
    assert [w for _, w in published] == sorted(counts.values(), reverse=True)


@given(st.lists(st.lists(st.sampled_from([f"n{k}" for k in range(40)]), max_size=5), max_size=80), st.integers(1, 6))
def test_neighbours_stay_bounded_and_keep_the_heaviest(batches: list[list[str]], limit: int) -> None:
    neighbours = Neighbours()
    for batch in batches:
        neighbours.add(batch, limit)
        assert len(neighbours.weights) <= 2 * limit
    heaviest = neighbours.top(1)
    if heaviest:
        assert heaviest[0][1] == max(neighbours.weights.values())


@given(item_messages())
def test_redelivery_changes_nothing(msgs: list[ItemMsg]) -> None:
    state = _apply_all(msgs)
    before = json.dumps(state.to_dict())
    assert all(isinstance(apply_item_event(state, m, CFG), Skipped) for m in msgs)
    assert json.dumps(state.to_dict()) == before


@settings(max_examples=50)
@given(item_messages(), st.randoms())
def test_out_of_order_gives_the_same_features(msgs: list[ItemMsg], rnd: random.Random) -> None:
    cfg = CFG.model_copy(update={"allowed_lateness_s": 10**7})
    shuffled = list(msgs)
    rnd.shuffle(shuffled)
    a, b = _apply_all(msgs, cfg).features(cfg), _apply_all(shuffled, cfg).features(cfg)
    exact = [k for k, v in a.items() if isinstance(v, int)]
    assert {k: a[k] for k in exact} == {k: b[k] for k in exact}
    assert dict(zip(a["covisit_items"], a["covisit_weights"])) == dict(zip(b["covisit_items"], b["covisit_weights"]))  # type: ignore[arg-type]
    for name in ("rating_mean", "popularity", "click_view_ratio", "purchase_view_ratio"):
        assert a[name] == pytest.approx(b[name])


@given(item_messages())
def test_state_round_trips_through_json(msgs: list[ItemMsg]) -> None:
    state = _apply_all(msgs)
    again = ItemState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state


def test_row_timestamp_is_the_newest_message() -> None:
    state = ItemState()
    apply_item_event(state, ItemMsg(msg_id="a", item_id="i0", ts_ms=5000, event_type=EventType.VIEW), CFG)
    update = apply_item_event(state, ItemMsg(msg_id="b", item_id="i0", ts_ms=4000, covisited=["i1"]), CFG)
    assert isinstance(update, ItemUpdate)
    assert (update.row.event_ts_ms, update.row.values["last_seen_ms"]) == (5000, 5000)


@st.composite
def sourced_deliveries(draw: st.DrawFn) -> tuple[list[ItemMsg], list[ItemMsg]]:
    """Unique rating messages from 3 source partitions, and a delivery order that
    interleaves the partitions arbitrarily (event times shuffled across them) and
    replays suffixes of partitions, as at-least-once redelivery does."""
    per_partition: list[list[ItemMsg]] = []
    for p in range(3):
        n = draw(st.integers(0, 15))
        per_partition.append([
            ItemMsg(msg_id=f"p{p}e{o}", item_id="i0", ts_ms=draw(st.integers(0, 10**7)), event_type=EventType.RATING,
                    rating=draw(st.integers(0, 10)) / 2, source=(p, o * 3))
            for o in range(n)
        ])
    streams = []
    for msgs in per_partition:
        restart = draw(st.integers(0, len(msgs)))
        streams.append(msgs + msgs[restart:])
    order = draw(st.permutations([p for p, s in enumerate(streams) for _ in s]))
    cursors = [0, 0, 0]
    delivered = []
    for p in order:
        delivered.append(streams[p][cursors[p]])
        cursors[p] += 1
    return [m for msgs in per_partition for m in msgs], delivered


@given(sourced_deliveries())
def test_sourced_messages_apply_exactly_once_whatever_the_interleaving(case) -> None:  # type: ignore[no-untyped-def]
    unique, delivered = case
    cfg = CFG.model_copy(update={"dedup_max_ids": 1, "allowed_lateness_s": 0})  # the id window would drop most
    state = _apply_all(delivered, cfg)
    row = state.features(cfg)
    assert row["n_rating"] == len(unique)
    assert row["rating_mean"] == pytest.approx(exact_mean([m.rating for m in unique]))  # type: ignore[misc]
    again = json.dumps(state.to_dict())
    assert all(isinstance(apply_item_event(state, m, cfg), Skipped) for m in delivered)
    assert json.dumps(state.to_dict()) == again
