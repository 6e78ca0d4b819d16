"""Hypothesis strategies and direct recomputations shared by the feature tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from streamrec.features.messages import ClickEvent, EventType

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
ITEMS = [f"i{n}" for n in range(8)]
ITEM_TYPES = [t for t in EventType if t is not EventType.SEARCH]


@st.composite
def event_specs(draw: st.DrawFn) -> tuple[EventType, str | None, float | None, int]:
    kind = draw(st.sampled_from(list(EventType)))
    item = None if kind is EventType.SEARCH else draw(st.sampled_from(ITEMS))
    rating = draw(st.integers(0, 10)) / 2 if kind is EventType.RATING else None
    gap_s = draw(st.sampled_from([0, 1, 30, 600, 3600]))
    return kind, item, rating, gap_s


@st.composite
def user_events(draw: st.DrawFn, user: str = "u1", max_size: int = 40) -> list[ClickEvent]:
    """A user's events in event-time order (gaps from 0 s to 1 h), unique ids."""
    specs = draw(st.lists(event_specs(), min_size=1, max_size=max_size))
    events, ts = [], T0
    for n, (kind, item, rating, gap_s) in enumerate(specs):
        ts += timedelta(seconds=gap_s)
        query = "shoes" if kind is EventType.SEARCH else None
        events.append(
            ClickEvent(event_id=f"e{n}", user_id=user, item_id=item, type=kind, rating=rating, query=query, ts=ts)
        )
    return events


def exact_mean(values: list[float]) -> float:
    from fractions import Fraction

    return float(sum(Fraction(v) for v in values) / len(values)) if values else 0.0
