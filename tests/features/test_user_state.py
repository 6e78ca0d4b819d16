from __future__ import annotations

import json
import random

import pytest
from tests.features.feature_strategies import ITEMS, exact_mean, user_events
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import EVENT_TYPES, ClickEvent, EventType
from streamrec.features.schema import epoch_ms
from streamrec.features.user_state import Skipped, UserState, UserUpdate, apply_user_event

CFG = FeatureConfig(recent_items=4, covisit_window_items=3, covisit_window_s=600)


def _apply_all(events: list[ClickEvent], cfg: FeatureConfig = CFG) -> tuple[UserState, list[UserUpdate | Skipped]]:
    state = UserState()
    return state, [apply_user_event(state, e, cfg) for e in events]


@given(user_events())
def test_counts_mean_and_times_equal_direct_recomputation(events: list[ClickEvent]) -> None:
    state, _ = _apply_all(events)
    row = state.features()
    for t in EVENT_TYPES:
        assert row[f"n_{t}"] == sum(e.type.value == t for e in events)
    assert row["event_count"] == len(events)
    assert row["rating_mean"] == pytest.approx(exact_mean([e.rating for e in events if e.rating is not None]))
    assert row["first_seen_ms"] == min(epoch_ms(e.ts) for e in events)
    assert row["last_seen_ms"] == max(epoch_ms(e.ts) for e in events)
    assert row["affinity_total"] == pytest.approx(sum(CFG.affinity_weights[e.type.value] for e in events))


@given(user_events())
def test_recent_items_are_the_latest_distinct_items_with_their_affinity(events: list[ClickEvent]) -> None:
    state, _ = _apply_all(events)
    last: dict[str, int] = {}
    for e in events:
        if e.item_id is not None and e.type is not EventType.SEARCH:
            last[e.item_id] = max(last.get(e.item_id, 0), epoch_ms(e.ts))
    expected = sorted(last, key=lambda i: (-last[i], i))[: CFG.recent_items]
    assert state.features()["recent_items"] == expected
    # every kept item was kept since its first event (in-order, no eviction in between) or re-entered later
    for item, affinity in zip(expected, state.features()["recent_item_affinity"]):  # type: ignore[arg-type]
        total = sum(CFG.affinity_weights[e.type.value] for e in events if e.item_id == item)
        assert 0 < affinity <= total


@given(user_events())
def test_session_features_equal_direct_recomputation(events: list[ClickEvent]) -> None:
    state, _ = _apply_all(events)
    gap_ms = CFG.session_gap_s * 1000
    times = [epoch_ms(e.ts) for e in events]
    starts = [0] + [n for n in range(1, len(times)) if times[n] - times[n - 1] > gap_ms]
    current = times[starts[-1] :]
    row = state.features()
    assert row["session_count"] == len(starts)
    assert row["session_events"] == len(current)
    assert row["session_start_ms"] == current[0]
    assert row["session_duration_s"] == (current[-1] - current[0]) / 1000


@given(user_events())
def test_redelivery_changes_nothing(events: list[ClickEvent]) -> None:
    state, _ = _apply_all(events)
    before = json.dumps(state.to_dict())
    results = [apply_user_event(state, e, CFG) for e in events]
    assert all(isinstance(r, Skipped) for r in results)
    assert json.dumps(state.to_dict()) == before


@settings(max_examples=50)
@given(user_events(), st.randoms())
def test_out_of_order_within_lateness_gives_the_same_aggregates(events: list[ClickEvent], rnd: random.Random) -> None:
    cfg = CFG.model_copy(update={"allowed_lateness_s": 10**7})
    shuffled = list(events)
    rnd.shuffle(shuffled)
    ordered, _ = _apply_all(events, cfg)
    mixed, _ = _apply_all(shuffled, cfg)
    a, b = ordered.features(), mixed.features()
    for name in ["event_count", "first_seen_ms", "last_seen_ms", *(f"n_{t}" for t in EVENT_TYPES)]:
        assert a[name] == b[name]
    assert a["rating_mean"] == pytest.approx(b["rating_mean"])
    assert a["affinity_total"] == pytest.approx(b["affinity_total"])


@given(user_events())
def test_state_round_trips_through_json(events: list[ClickEvent]) -> None:
    state, _ = _apply_all(events)
    again = UserState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert again.features() == state.features()


def test_too_late_event_is_skipped() -> None:
    state, _ = _apply_all([_event("a", ts=10_000)], FeatureConfig(allowed_lateness_s=5))
    result = apply_user_event(state, _event("b", ts=4_000), FeatureConfig(allowed_lateness_s=5))
    assert result == Skipped("late")
    assert state.features()["event_count"] == 1


def test_item_message_carries_the_covisited_recent_items() -> None:
    state, _ = _apply_all([_event("a", item="i1", ts=1), _event("b", item="i2", ts=2)])
    update = apply_user_event(state, _event("c", item="i3", ts=3), CFG)
    assert isinstance(update, UserUpdate)
    [own] = update.item_messages
    assert (own.item_id, own.event_type, own.covisited, own.msg_id) == ("i3", EventType.VIEW, ["i2", "i1"], "c")
    assert own.source is None


def test_the_source_offset_travels_to_the_item_side() -> None:
    update = apply_user_event(UserState(), _event("a", item="i1", ts=1), CFG, source=(2, 41))
    assert isinstance(update, UserUpdate)
    assert [m.source for m in update.item_messages] == [(2, 41)]


def test_symmetric_covisits_also_message_the_recent_items() -> None:
    cfg = CFG.model_copy(update={"covisit_symmetric": True})
    state, _ = _apply_all([_event("a", item="i1", ts=1), _event("b", item="i2", ts=2)], cfg)
    update = apply_user_event(state, _event("c", item="i3", ts=3), cfg)
    assert isinstance(update, UserUpdate)
    own, *others = update.item_messages
    assert (own.item_id, own.event_type, own.covisited) == ("i3", EventType.VIEW, ["i2", "i1"])
    assert [(m.item_id, m.event_type, m.covisited) for m in others] == [("i2", None, ["i3"]), ("i1", None, ["i3"])]
    assert {m.msg_id for m in update.item_messages} == {"c"}
    assert update.row.touched == ("i3",)


def test_search_events_send_nothing_to_items() -> None:
    state = UserState()
    search = ClickEvent(event_id="s", user_id="u1", type=EventType.SEARCH, query="shoes", ts=1)
    update = apply_user_event(state, search, CFG)
    assert isinstance(update, UserUpdate)
    assert update.item_messages == [] and update.row.touched == ()
    assert update.row.values["n_search"] == 1


def _event(event_id: str, *, ts: int, item: str = ITEMS[0]) -> ClickEvent:
    return ClickEvent(event_id=event_id, user_id="u1", item_id=item, type=EventType.VIEW, ts=ts)


def test_a_global_shard_counts_a_record_once_by_its_offset() -> None:
    from datetime import datetime, timezone

    from streamrec.features.global_state import GlobalShard
    from streamrec.features.messages import ClickEvent, EventType

    shard = GlobalShard()
    event = ClickEvent(event_id="e", user_id="u", item_id="i", type=EventType.VIEW, ts=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert shard.add(event, 7) and not shard.add(event, 7) and not shard.add(event, 3) and shard.add(event, 8)
    restored = GlobalShard.from_dict(shard.to_dict())
    assert restored.applied == 8 and restored.features() == shard.features() and not restored.add(event, 8)
    assert GlobalShard.from_dict(GlobalShard().activity.to_dict()).applied == -1  # the earlier layout reads
