"""No distinct event loses its effect to the idempotency memory, and none counts twice.

Regression tests for a per-entity event-id window that, once it held more than
``dedup_max_ids`` ids, raised a floor to the oldest remembered event time and then
refused every later event at or below it as "late": a user with more events in one
millisecond (or one second, with epoch-second clocks) than the window holds lost
events, and so did a backlog of old events inside the allowed lateness.

Property tests: distinct events, their records redelivered from any earlier offset
any number of times (at-least-once), are each applied exactly once or refused as
late, and the aggregates equal a direct recomputation over the applied ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.history import HistoryStats, feature_history
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.schema import USER_VIEW, epoch_ms
from streamrec.features.user_state import Skipped, UserState, UserUpdate, apply_user_event
from tests.features.feature_strategies import ITEMS, exact_mean

CFG = FeatureConfig()  # the defaults: dedup_max_ids=128, allowed_lateness_s=3600
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _rating(n: int, ts: datetime, user: str = "u1", rating: float = 4.0) -> ClickEvent:
    return ClickEvent(event_id=f"e{n}", user_id=user, item_id=ITEMS[n % len(ITEMS)], type=EventType.RATING,
                      rating=rating, ts=ts)


def _apply(events: list[ClickEvent], cfg: FeatureConfig = CFG, state: UserState | None = None,
           first_offset: int = 0) -> tuple[UserState, list[UserUpdate | Skipped]]:
    state = state if state is not None else UserState()
    results = [apply_user_event(state, e, cfg, source=(0, first_offset + n)) for n, e in enumerate(events)]
    return state, results


# -- regressions -------------------------------------------------------------------------
@pytest.mark.parametrize("n", [CFG.dedup_max_ids + 1, 500])
def test_hundreds_of_events_in_one_millisecond_are_all_applied(n: int) -> None:
    events = [_rating(k, T0, rating=(k % 11) / 2) for k in range(n)]
    state, results = _apply(events)
    assert [r for r in results if isinstance(r, Skipped)] == []
    row = state.features()
    assert row["n_rating"] == n
    assert row["rating_mean"] == pytest.approx(exact_mean([e.rating for e in events]))  # type: ignore[misc]


def test_events_stamped_in_whole_seconds_are_all_applied() -> None:
    """Epoch seconds are a valid ``ts``: a burst of 450 events over three seconds."""
    events = [_rating(k, T0 + timedelta(seconds=k // 150)) for k in range(450)]
    state, _ = _apply(events)
    assert state.features()["n_rating"] == 450


def test_a_backlog_of_old_events_inside_the_lateness_is_applied() -> None:
    """A mobile client uploads 200 events from half an hour ago after 300 recent ones."""
    recent = [_rating(k, T0 + timedelta(milliseconds=k)) for k in range(300)]
    backlog = [_rating(1000 + k, T0 - timedelta(minutes=30) + timedelta(seconds=k)) for k in range(200)]
    state, results = _apply(recent + backlog)
    assert [r for r in results if isinstance(r, Skipped)] == []
    assert state.features()["n_rating"] == 500
    assert state.features()["first_seen_ms"] == epoch_ms(backlog[0].ts)


def test_an_event_exactly_at_the_lateness_bound_is_applied_and_one_beyond_is_late() -> None:
    cfg = CFG.model_copy(update={"allowed_lateness_s": 60})
    state, _ = _apply([_rating(0, T0)], cfg)
    at_bound = apply_user_event(state, _rating(1, T0 - timedelta(seconds=60)), cfg, source=(0, 1))
    beyond = apply_user_event(state, _rating(2, T0 - timedelta(seconds=60, milliseconds=1)), cfg, source=(0, 2))
    assert isinstance(at_bound, UserUpdate)
    assert beyond == Skipped("late")
    assert state.features()["n_rating"] == 2


def test_zero_lateness_still_applies_events_of_the_same_instant() -> None:
    cfg = CFG.model_copy(update={"allowed_lateness_s": 0})
    state, results = _apply([_rating(k, T0) for k in range(5)], cfg)
    assert all(isinstance(r, UserUpdate) for r in results)
    assert state.features()["n_rating"] == 5


def test_a_redelivered_burst_changes_nothing() -> None:
    """The same records again (same offsets), as after a worker restart before a commit."""
    events = [_rating(k, T0) for k in range(400)]
    state, _ = _apply(events)
    before = json.dumps(state.to_dict())
    _, again = _apply(events, state=state)
    assert again == [Skipped("duplicate")] * 400
    assert json.dumps(state.to_dict()) == before


def test_a_client_resending_a_recent_event_is_caught_by_its_id() -> None:
    """The same event as a new record (a new offset): the id window refuses it."""
    events = [_rating(k, T0) for k in range(10)]
    state, _ = _apply(events)
    resent = apply_user_event(state, events[3], CFG, source=(0, 10))
    assert resent == Skipped("duplicate")
    assert state.features()["n_rating"] == 10


def test_the_id_window_stays_bounded() -> None:
    cfg = CFG.model_copy(update={"dedup_max_ids": 16})
    state, _ = _apply([_rating(k, T0) for k in range(1000)], cfg)
    assert len(state.window) <= 16
    assert state.features()["n_rating"] == 1000


def test_ids_older_than_the_lateness_are_forgotten() -> None:
    """Their re-send would be refused as late anyway: no need to remember them."""
    cfg = CFG.model_copy(update={"allowed_lateness_s": 60})
    old = [_rating(k, T0) for k in range(10)]
    state, _ = _apply(old, cfg)
    _apply([_rating(100, T0 + timedelta(hours=1))], cfg, state=state, first_offset=10)
    assert len(state.window) == 1
    assert apply_user_event(state, old[0], cfg, source=(0, 11)) == Skipped("late")


@pytest.mark.slow
def test_movielens_with_original_times_loses_no_rating() -> None:
    """MovieLens stamps in whole seconds; one user has 87 ratings in one second. No
    id window, however small next to such a burst, may cost a rating."""
    cfg = CFG.model_copy(update={"dedup_max_ids": 16})
    from streamrec.models.datasets import load_movielens
    from streamrec.models.datasets import events_from

    frame = load_movielens().interactions.sort_values("ts", kind="stable")
    per_second = frame.groupby(["user_id", "ts"]).size()
    assert per_second.max() > CFG.dedup_max_ids / 2  # the data still has the burst this test is about
    events = list(events_from(frame, "movielens"))
    stats = HistoryStats()
    counts: dict[str, int] = {}
    for row in feature_history(events, cfg, stats):
        if row.view == USER_VIEW:
            counts[row.entity_id] = int(row.values["n_rating"])  # type: ignore[call-overload]
    assert stats.skipped == {}
    expected = frame.groupby("user_id").size()
    assert counts == {str(u): int(n) for u, n in expected.items()}


# -- properties --------------------------------------------------------------------------
@st.composite
def burst_events(draw: st.DrawFn, max_size: int = 60) -> list[ClickEvent]:
    """One user's distinct events, few distinct timestamps (bursts), in any time order."""
    n = draw(st.integers(1, max_size))
    offsets_s = draw(st.lists(st.sampled_from([0, 0, 0, 1, 5, 30, 600, 3000, 7200]), min_size=n, max_size=n))
    return [_rating(k, T0 + timedelta(seconds=s), rating=draw(st.integers(0, 10)) / 2) for k, s in enumerate(offsets_s)]


@st.composite
def redeliveries(draw: st.DrawFn, n: int) -> list[int]:
    """Record positions as an at-least-once consumer sees them: in order, restarting
    from any earlier position any number of times."""
    order, position, restarts = [], 0, draw(st.integers(0, 4))
    while position < n:
        order.append(position)
        position += 1
        if restarts and draw(st.integers(0, 9)) == 9:
            restarts -= 1
            position = draw(st.integers(0, position))
    restart = draw(st.integers(0, n))
    return order + list(range(restart, n))


@settings(max_examples=200)
@given(st.data(), burst_events(), st.sampled_from([0, 60, 3600, 10**6]), st.integers(1, 8))
def test_redelivery_from_any_offset_applies_each_event_once_or_refuses_it_late(
    data: st.DataObject, events: list[ClickEvent], lateness_s: int, max_ids: int
) -> None:
    cfg = CFG.model_copy(update={"allowed_lateness_s": lateness_s, "dedup_max_ids": max_ids})
    once, first = _apply(events, cfg)
    order = data.draw(redeliveries(len(events)))
    state = UserState()
    outcomes: dict[int, list[str]] = {}
    for position in order:
        result = apply_user_event(state, events[position], cfg, source=(0, position))
        outcomes.setdefault(position, []).append("applied" if isinstance(result, UserUpdate) else result.reason)
    applied = [k for k, r in enumerate(first) if isinstance(r, UserUpdate)]
    late = [k for k, r in enumerate(first) if isinstance(r, Skipped)]
    assert all(r == Skipped("late") for r in (first[k] for k in late))
    # each record is applied on its first delivery or refused late there; never applied again
    for position, seen in outcomes.items():
        assert seen[0] == ("applied" if position in applied else "late")
        assert "applied" not in seen[1:]
    assert state.to_dict() == once.to_dict()
    row = state.features()
    assert row["n_rating"] == len(applied)
    assert row["rating_mean"] == pytest.approx(exact_mean([events[k].rating for k in applied]))  # type: ignore[misc]


@settings(max_examples=200)
@given(burst_events(), st.randoms())
def test_within_the_lateness_no_arrival_order_loses_an_event(events: list[ClickEvent], rnd) -> None:  # type: ignore[no-untyped-def]
    """Distinct events in any arrival order, every one inside the lateness: all applied,
    however small the id window."""
    cfg = CFG.model_copy(update={"allowed_lateness_s": 10**6, "dedup_max_ids": 1})
    shuffled = list(events)
    rnd.shuffle(shuffled)
    state, results = _apply(shuffled, cfg)
    assert all(isinstance(r, UserUpdate) for r in results)
    assert state.features()["n_rating"] == len(events)


@settings(max_examples=200)
@given(burst_events(max_size=30), st.randoms())
def test_client_resends_inside_the_id_window_never_double_count(events: list[ClickEvent], rnd) -> None:  # type: ignore[no-untyped-def]
    """Every event sent two or three times as new records, in any order: with a window
    that holds them all, each counts once; with any window, none is lost."""
    copies = [e for e in events for _ in range(rnd.randint(2, 3))]
    rnd.shuffle(copies)
    for max_ids, exact in ((len(events), True), (1, False)):
        cfg = CFG.model_copy(update={"allowed_lateness_s": 10**6, "dedup_max_ids": max_ids})
        state, results = _apply(copies, cfg)
        applied = [c.event_id for c, r in zip(copies, results) if isinstance(r, UserUpdate)]
        assert set(applied) == {e.event_id for e in events}
        if exact:
            assert sorted(applied) == sorted(e.event_id for e in events)
            assert state.features()["n_rating"] == len(events)
