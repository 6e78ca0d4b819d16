"""The invariant check's pure parts: recomputation from records, DLQ letters, comparison."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.global_state import GlobalShard
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.messages import ClickEvent, DeadLetter, EventType, Rejection
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event
from streamrec.features.verify import Record, Tally, check, compare, dead_lettered, recompute
from tests.features.feature_strategies import user_events

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
TOPIC = "clickstream"


def _event(n: int, user: str = "u1", item: str | None = "i1", kind: EventType = EventType.RATING,
           ts: datetime = T0) -> ClickEvent:
    rating = float(n % 5) if kind is EventType.RATING else None
    query = "q" if kind is EventType.SEARCH else None
    return ClickEvent(event_id=f"e{n}", user_id=user, item_id=None if kind is EventType.SEARCH else item,
                      type=kind, rating=rating, query=query, ts=ts)


def _records(events: list[ClickEvent], partition: int = 0) -> list[Record]:
    return [Record(partition, n, e.to_bytes(), e.user_id.encode()) for n, e in enumerate(events)]


def _letter(reason: str, partition: int, offset: int, topic: str = TOPIC) -> bytes:
    rejection = Rejection.model_construct(reason=reason, field=None, detail="x")
    return DeadLetter.build(b"{}", rejection, source_topic=topic, partition=partition, offset=offset).model_dump_json().encode()


def test_each_event_id_counts_once_and_late_records_not_at_all() -> None:
    events = [_event(0), _event(1, item="i2"), _event(2, user="u2"), _event(3, kind=EventType.SEARCH)]
    records = _records(events + [events[0]])  # offset 4: a re-send of e0
    expected = recompute(records + [Record(0, 5, b"{bad")], late={(0, 1)}, max_bytes=4096)
    assert (expected.records, expected.repeated, expected.late, expected.invalid) == (6, 1, 1, [(0, 5)])
    assert expected.users["u1"].features()["event_count"] == 2  # e0 and the search; e1 was late
    assert expected.users["u1"].features()["n_search"] == 1
    assert set(expected.items) == {"i1"}  # e1's item had no applied event, a search has none
    assert expected.items["i1"].features()["rating_mean"] == pytest.approx((0 + 2) / 2)
    assert expected.total.features()["event_count"] == 3


def test_an_event_late_on_one_record_but_applied_on_another_counts_once() -> None:
    event = _event(0)
    expected = recompute(_records([event, event]), late={(0, 1)}, max_bytes=4096)
    assert expected.users["u1"].features()["event_count"] == 1


def test_records_are_parsed_as_the_worker_parses_them() -> None:
    payload = b'{"event_id":"x","user_id":"u","item_id":"i","type":"view","ts":1,"extra":1}'
    assert recompute([Record(0, 0, payload, b"u")], set(), max_bytes=4096).invalid == [(0, 0)]
    assert recompute([Record(0, 0, payload, b"u")], set(), max_bytes=4096, allow_unknown_fields=True).invalid == []
    assert recompute([Record(0, 0, payload, b"u")], set(), max_bytes=10).invalid == [(0, 0)]


def test_dead_letters_of_other_topics_and_unreadable_ones_are_passed_over() -> None:
    letters = [_letter("late", 0, 3), _letter("invalid_json", 1, 4), _letter("late", 0, 9, topic="other"), b"junk"]
    every, late = dead_lettered(letters, TOPIC)
    assert every == {(0, 3), (1, 4)}
    assert late == {(0, 3)}


def test_comparison_names_each_wrong_feature_and_missing_rows() -> None:
    tally = Tally()
    for n in range(3):
        tally.add(_event(n))
    good = dict(tally.features())
    wrong = {**good, "n_rating": 2, "rating_mean": 9.0}
    empty = {name: None for name in good}
    lines = compare("user", {"a": tally, "b": tally, "c": tally}, [good, wrong, empty])
    assert lines == ["user b: n_rating online=2 expected=3", "user b: rating_mean online=9.0 expected=1.0",
                     "user c: no online row"]


def test_the_mean_is_compared_to_float_rounding_only() -> None:
    tally = Tally()
    tally.add(_event(1))
    row = {**tally.features(), "rating_mean": 1.0 + 1e-12}
    assert compare("item", {"i": tally}, [row]) == []


def test_check_lists_invalid_records_missing_from_the_dlq_and_global_sums() -> None:
    expected = recompute(_records([_event(0)]) + [Record(0, 1, b"?"), Record(0, 2, b"?")], set(), max_bytes=4096)
    user = expected.users["u1"].features()
    item = expected.items["i1"].features()
    shards = [{**user, "event_count": 0, "n_rating": 0}, user]  # the sum over shards is what counts
    assert check(expected, {(0, 1)}, [user], [item], shards) == ["record 0:2 is invalid but not in the DLQ"]
    assert check(expected, {(0, 1), (0, 2)}, [user], [item], [user, user]) == [
        "global n_rating: online=2 expected=1", "global event_count: online=2 expected=1"]


@given(user_events(max_size=30), st.randoms())
def test_the_worker_functions_and_the_recomputation_agree(events: list[ClickEvent], rnd) -> None:  # type: ignore[no-untyped-def]
    """Events re-sent and redelivered in any order: what the update functions hold
    equals what verify recomputes from the same records (no false alarm)."""
    cfg = FeatureConfig(allowed_lateness_s=10**7)
    sent = events + [rnd.choice(events) for _ in range(rnd.randint(0, 10))]
    rnd.shuffle(sent)
    records = _records(sent)
    user, items, shard = UserState(), {}, GlobalShard()
    for record, event in zip(records, sent):
        update = apply_user_event(user, event, cfg, source=(record.partition, record.offset))
        if isinstance(update, UserUpdate):
            shard.add(event)
            for msg in update.item_messages:
                apply_item_event(items.setdefault(msg.item_id, ItemState()), msg, cfg)
    expected = recompute(records, set(), max_bytes=4096)
    item_ids = list(expected.items)
    assert check(expected, set(), [user.features()], [items[i].features(cfg) for i in item_ids], [shard.features()]) == []


def test_a_lost_event_is_reported() -> None:
    """What the window bug did: events applied to fewer than all: verify says so."""
    events = [_event(n, ts=T0 + timedelta(milliseconds=n % 2)) for n in range(10)]
    cfg = FeatureConfig()
    user = UserState()
    for n, event in enumerate(events[:-1]):  # one never applied and not in the DLQ
        apply_user_event(user, event, cfg, source=(0, n))
    expected = recompute(_records(events), set(), max_bytes=4096)
    lines = compare("user", expected.users, [user.features()])
    assert "user u1: n_rating online=9 expected=10" in lines
