from __future__ import annotations

from datetime import datetime, timezone

from streamrec.features.config import FeatureConfig
from streamrec.features.global_state import GlobalShard
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.schema import ITEM_VIEW, USER_VIEW
from streamrec.features.user_state import UserState, apply_user_event
from streamrec.stream.online_refill import item_row, shard_row, user_row

CFG = FeatureConfig()


def _event(n: int, user: str = "u1", item: str = "i1") -> ClickEvent:
    return ClickEvent(event_id=f"e{n}", user_id=user, item_id=item, type=EventType.RATING, rating=4.0,
                      ts=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_a_refilled_user_row_is_the_row_its_last_event_wrote() -> None:
    state = UserState()
    for n, item in enumerate(["i1", "i2"]):
        last = apply_user_event(state, _event(n, item=item), CFG, source=(3, 10 + n))
    row = user_row("u1", state, {3})
    assert row is not None and row.view == USER_VIEW
    assert row.values == last.row.values and row.event_ts_ms == last.row.event_ts_ms  # type: ignore[union-attr]
    assert set(row.touched) == {"i1", "i2"}  # the seen-items set gets the recent items back


def test_only_owned_partitions_are_refilled() -> None:
    state = UserState()
    apply_user_event(state, _event(0), CFG, source=(3, 0))
    assert user_row("u1", state, {0, 1}) is None
    assert shard_row("p1", GlobalShard(), {0}) is None and shard_row("p0", GlobalShard(), {0}) is not None
    item = ItemState()
    assert item_row("i1", item, {1}, lambda _: 2, CFG) is None


def test_a_refilled_item_row_is_the_row_its_last_update_wrote() -> None:
    state, user = ItemState(), UserState()
    update = apply_user_event(user, _event(0), CFG, source=(0, 5))
    written = apply_item_event(state, update.item_messages[0], CFG)  # type: ignore[union-attr]
    row = item_row("i1", state, {2}, lambda _: 2, CFG)
    assert row is not None and row.view == ITEM_VIEW and row.values == written.row.values  # type: ignore[union-attr]
