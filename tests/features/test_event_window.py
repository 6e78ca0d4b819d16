from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamrec.features.window import EventWindow, mark_applied, redelivered, too_late

# (event number, event time): the same number is the same event, re-sent
deliveries = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 200)), max_size=120)


def _deliver(window: EventWindow, stream: list[tuple[int, int]], lateness: int, max_ids: int) -> list[str]:
    """The window and the lateness rule as the update functions use them."""
    applied: list[str] = []
    newest: int | None = None
    for n, ts in stream:
        event_id = f"e{n}"
        if window.seen(event_id) or too_late(ts, newest, lateness):
            continue
        newest = ts if newest is None else max(newest, ts)
        window.remember(event_id, ts, newest - lateness, max_ids)
        applied.append(event_id)
    return applied


@given(deliveries, st.integers(1, 10))
def test_a_window_as_large_as_the_events_applies_each_exactly_once(stream, max_ids) -> None:  # type: ignore[no-untyped-def]
    """Any order, any re-sends, no lateness bound: every event once, none twice."""
    distinct = {n for n, _ in stream}
    applied = _deliver(EventWindow(), stream + stream[::-1] + stream, 10**6, max(max_ids, len(distinct)))
    assert sorted(applied) == sorted(f"e{n}" for n in distinct)


@given(deliveries, st.integers(0, 100), st.integers(1, 10))
def test_the_window_never_refuses_an_event_it_has_not_seen(stream, lateness, max_ids) -> None:  # type: ignore[no-untyped-def]
    """Whatever the bound: an event is refused only as a re-send of an applied id or as late."""
    window, newest = EventWindow(), None
    applied: set[str] = set()
    for n, ts in stream:
        event_id = f"e{n}"
        if window.seen(event_id):
            assert event_id in applied
        elif not too_late(ts, newest, lateness):
            newest = ts if newest is None else max(newest, ts)
            window.remember(event_id, ts, newest - lateness, max_ids)
            applied.add(event_id)


@given(deliveries, st.integers(0, 100), st.integers(1, 10))
def test_memory_stays_bounded(stream, lateness, max_ids) -> None:  # type: ignore[no-untyped-def]
    window = EventWindow()
    _deliver(window, stream, lateness, max_ids)
    assert len(window) <= max_ids
    assert len(window.entries) == len({eid for _, eid in window.entries})


def test_events_of_one_instant_are_never_late_to_each_other() -> None:
    applied = _deliver(EventWindow(), [(n, 7) for n in range(30)], lateness=0, max_ids=2)
    assert len(applied) == 30


def test_lateness_is_strict_beyond_the_bound() -> None:
    assert not too_late(900, 1000, 100)
    assert too_late(899, 1000, 100)
    assert not too_late(0, None, 0)


def test_the_oldest_arrival_is_forgotten_first() -> None:
    window = EventWindow()
    for n, ts in enumerate([50, 10, 30]):
        window.remember(f"e{n}", ts, horizon_ms=0, max_ids=2)
    assert not window.seen("e0") and window.seen("e1") and window.seen("e2")


def test_ids_below_the_horizon_are_forgotten() -> None:
    window = EventWindow()
    window.remember("a", 100, horizon_ms=0, max_ids=10)
    window.remember("b", 500, horizon_ms=400, max_ids=10)
    assert not window.seen("a") and window.seen("b")


def test_offsets_mark_redelivery_per_partition() -> None:
    applied: dict[str, int] = {}
    assert not redelivered(applied, (0, 0))
    mark_applied(applied, (0, 5))
    mark_applied(applied, (1, 2))
    assert redelivered(applied, (0, 5)) and redelivered(applied, (0, 3))
    assert not redelivered(applied, (0, 6)) and not redelivered(applied, (2, 0))
    mark_applied(applied, (0, 4))  # never moves back
    assert applied == {"0": 5, "1": 2}


def test_round_trips_through_dict() -> None:
    window = EventWindow()
    for n in range(5):
        window.remember(f"e{n}", n, horizon_ms=0, max_ids=10)
    again = EventWindow.from_dict(window.to_dict())
    assert again == window
    assert again.seen("e4")


def test_reads_the_earlier_layout_with_a_floor() -> None:
    window = EventWindow.from_dict({"floor_ms": 90, "entries": [[95, "a"], [99, "b"]]})
    assert window.seen("a") and window.seen("b") and len(window) == 2
