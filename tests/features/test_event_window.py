from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from features.window import EventWindow

deliveries = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 200)), max_size=120)


def _deliver(window: EventWindow, stream: list[tuple[int, int]], lateness: int, max_ids: int) -> list[str]:
    applied, newest = [], None
    for n, ts in stream:
        event_id = f"e{n}@{ts}"
        if window.check(event_id, ts) == "new":
            newest = ts if newest is None else max(newest, ts)
            window.remember(event_id, ts, newest, lateness, max_ids)
            applied.append(event_id)
    return applied


@given(deliveries, st.integers(0, 100), st.integers(1, 10))
def test_no_event_is_applied_twice_under_any_redelivery(stream, lateness, max_ids) -> None:  # type: ignore[no-untyped-def]
    window = EventWindow()
    applied = _deliver(window, stream + stream[::-1] + stream, lateness, max_ids)
    assert len(applied) == len(set(applied))


@given(deliveries, st.integers(0, 100), st.integers(1, 10))
def test_memory_stays_bounded(stream, lateness, max_ids) -> None:  # type: ignore[no-untyped-def]
    window = EventWindow()
    _deliver(window, stream, lateness, max_ids)
    assert len(window.entries) <= max_ids


def test_in_order_events_within_bounds_are_all_applied() -> None:
    window = EventWindow()
    applied = _deliver(window, [(n, n) for n in range(50)], lateness=100, max_ids=100)
    assert len(applied) == 50


def test_verdicts() -> None:
    window = EventWindow()
    window.remember("a", 1000, 1000, lateness_ms=100, max_ids=10)
    assert window.check("a", 1000) == "duplicate"
    assert window.check("b", 900) == "late"
    assert window.check("b", 901) == "new"


def test_round_trips_through_dict() -> None:
    window = EventWindow()
    for n in range(5):
        window.remember(f"e{n}", n, n, lateness_ms=2, max_ids=10)
    again = EventWindow.from_dict(window.to_dict())
    assert again == window
    assert again.check("e4", 4) == "duplicate"
