"""Per-user streaming state and the user-side update (pure: no I/O, no clock).

The user agent sees one user's events in partition order. For each event it calls
:func:`apply_user_event`; a :class:`UserUpdate` carries the user's new feature row
and the messages to send to the item side (repartitioned by item id). A
:class:`Skipped` result means the event changed nothing and nothing must be written
or sent: a ``duplicate`` (a redelivered record, or a re-sent event id) or ``late``
(older than the allowed lateness; the worker sends it to the DLQ). The rules are in
:mod:`streamrec.features.window`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Literal

from streamrec.features.activity import Activity
from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ClickEvent, EventType, ItemId, ItemMsg
from streamrec.features.schema import USER_VIEW, FeatureRow, FeatureValue, epoch_ms
from streamrec.features.window import EventWindow, mark_applied, redelivered, routed_source, too_late


@dataclass(frozen=True)
class Skipped:
    """The event changed nothing. ``reason`` is a stable code for metrics and the DLQ;
    ``detail`` says why in words (not compared)."""

    reason: Literal["duplicate", "late"]
    detail: str = field(default="", compare=False)


@dataclass(frozen=True)
class UserUpdate:
    row: FeatureRow
    item_messages: list[ItemMsg]


@dataclass
class RecentItem:
    item_id: ItemId
    last_ms: int
    affinity: float


@dataclass
class Session:
    """The user's current session by event time: a pause over the gap starts another."""

    count: int = 0
    start_ms: int = 0
    last_ms: int = 0
    events: int = 0

    def observe(self, ts_ms: int, gap_ms: float) -> None:
        if self.count == 0 or ts_ms > self.last_ms + gap_ms:
            self.count += 1
            self.start_ms = self.last_ms = ts_ms
            self.events = 1
        elif ts_ms >= self.start_ms - gap_ms:
            self.events += 1
            self.start_ms = min(self.start_ms, ts_ms)
            self.last_ms = max(self.last_ms, ts_ms)
        # else: a late event from an earlier session leaves the current one alone


@dataclass
class UserState:
    window: EventWindow = field(default_factory=EventWindow)
    activity: Activity = field(default_factory=Activity)
    affinity_total: float = 0.0
    recent: list[RecentItem] = field(default_factory=list)  # newest first
    session: Session = field(default_factory=Session)
    applied: dict[str, int] = field(default_factory=dict)  # source partition -> highest offset applied

    def features(self) -> dict[str, FeatureValue]:
        """The ``user_features`` row; depends on the state only (event time, no clock)."""
        values = self.activity.features()
        values.update(
            affinity_total=self.affinity_total,
            recent_items=[r.item_id for r in self.recent],
            recent_item_affinity=[r.affinity for r in self.recent],
            session_count=self.session.count,
            session_start_ms=self.session.start_ms,
            session_events=self.session.events,
            session_duration_s=(self.session.last_ms - self.session.start_ms) / 1000.0,
        )
        return values

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; ``from_dict(to_dict())`` gives an equal state."""
        return {
            "window": self.window.to_dict(),
            "activity": self.activity.to_dict(),
            "affinity_total": self.affinity_total,
            "recent": [[r.item_id, r.last_ms, r.affinity] for r in self.recent],
            "session": [self.session.count, self.session.start_ms, self.session.last_ms, self.session.events],
            "applied": dict(self.applied),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserState:
        return cls(
            window=EventWindow.from_dict(data["window"]),
            activity=Activity.from_dict(data["activity"]),
            affinity_total=float(data["affinity_total"]),
            recent=[RecentItem(str(i), int(ts), float(a)) for i, ts, a in data["recent"]],
            session=Session(*(int(v) for v in data["session"])),
            applied={str(k): int(v) for k, v in data.get("applied", {}).items()},
        )


def apply_user_event(
    state: UserState, event: ClickEvent, cfg: FeatureConfig, source: tuple[int, int] | None = None,
    origin: tuple[int, int] | None = None,
) -> UserUpdate | Skipped:
    """Apply one event to ``state`` in place, unless already applied or too late.

    ``source`` is the event's (partition, offset) on ``clickstream``: with it a
    redelivered record is recognised exactly (offset at or below the user's mark for
    that partition), and the item side deduplicates by it too. ``origin`` is, for a
    copy routed to the user's partition (features/routing.py), the (partition, offset) of
    the original record: a second copy of the same original is a duplicate too.

    Returns ``Skipped("duplicate")`` for a redelivered record or a re-sent event id
    the window remembers, ``Skipped("late")`` for an event older than the user's
    newest one by more than ``cfg.allowed_lateness_s``; ``state`` is then unchanged.
    Any other event is applied, however many events share its time. Counts, the
    rating mean, first/last seen and ``affinity_total`` do not depend on arrival
    order; recent items stay ordered by event time.
    """
    ts_ms = epoch_ms(event.ts)
    skipped = _check(state, event.event_id, ts_ms, cfg, source, origin)
    if skipped is not None:
        return skipped
    covisited = _covisited(state, event.item_id, ts_ms, cfg) if event.item_id else []
    _accumulate(state, event, ts_ms, cfg)
    newest_ms = state.activity.last_seen_ms or ts_ms
    state.window.remember(event.event_id, ts_ms, newest_ms - cfg.allowed_lateness_ms, cfg.dedup_max_ids)
    if source is not None:
        mark_applied(state.applied, source)
    if origin is not None:
        mark_applied(state.applied, routed_source(origin))
    touched = (event.item_id,) if event.item_id is not None and event.type is not EventType.SEARCH else ()
    row = FeatureRow(USER_VIEW, event.user_id, state.features(), newest_ms, touched)
    return UserUpdate(row, _item_messages(event, ts_ms, covisited, cfg.covisit_symmetric, source))


def _check(state: UserState, event_id: str, ts_ms: int, cfg: FeatureConfig,
           source: tuple[int, int] | None, origin: tuple[int, int] | None = None) -> Skipped | None:
    """The rules of :mod:`streamrec.features.window`, in order: redelivery, re-send, lateness."""
    if source is not None and redelivered(state.applied, source):
        return Skipped("duplicate", f"record {source[0]}:{source[1]} was applied already")
    if origin is not None and redelivered(state.applied, routed_source(origin)):
        return Skipped("duplicate", f"a copy of record {origin[0]}:{origin[1]} was applied already")
    if state.window.seen(event_id):
        return Skipped("duplicate", f"event id {event_id!r} was applied already")
    newest_ms = state.activity.last_seen_ms
    if too_late(ts_ms, newest_ms, cfg.allowed_lateness_ms):
        return Skipped("late", f"event time {ts_ms} ms is more than {cfg.allowed_lateness_s:g} s "
                               f"older than the user's newest event ({newest_ms} ms)")
    return None


def _accumulate(state: UserState, event: ClickEvent, ts_ms: int, cfg: FeatureConfig) -> None:
    state.activity.observe(event.type.value, event.rating, ts_ms)
    weight = cfg.affinity_weights[event.type.value]
    state.affinity_total += weight
    state.session.observe(ts_ms, cfg.session_gap_s * 1000.0)
    if event.item_id is not None and event.type is not EventType.SEARCH:
        _touch_recent(state, event.item_id, ts_ms, weight, cfg.recent_items)


def _touch_recent(state: UserState, item_id: ItemId, ts_ms: int, weight: float, keep: int) -> None:
    """Keep the ``keep`` distinct items with the newest interaction, newest first."""
    previous = next((r for r in state.recent if r.item_id == item_id), None)
    if previous is not None:
        state.recent.remove(previous)
        entry = RecentItem(item_id, max(previous.last_ms, ts_ms), previous.affinity + weight)
    else:
        entry = RecentItem(item_id, ts_ms, weight)
    # newest first; ties keep the item id order stable whatever the arrival order
    keys = [(-r.last_ms, r.item_id) for r in state.recent]
    state.recent.insert(bisect.bisect_left(keys, (-entry.last_ms, entry.item_id)), entry)
    del state.recent[keep:]


def _covisited(state: UserState, item_id: ItemId, ts_ms: int, cfg: FeatureConfig) -> list[ItemId]:
    """The user's recent items close in event time to this one (not itself)."""
    window_ms = cfg.covisit_window_s * 1000.0
    near = [r.item_id for r in state.recent if r.item_id != item_id and abs(r.last_ms - ts_ms) <= window_ms]
    return near[: cfg.covisit_window_items]


def _item_messages(
    event: ClickEvent, ts_ms: int, covisited: list[ItemId], symmetric: bool, source: tuple[int, int] | None
) -> list[ItemMsg]:
    if event.item_id is None or event.type is EventType.SEARCH:
        return []
    own = ItemMsg(
        msg_id=event.event_id,
        item_id=event.item_id,
        ts_ms=ts_ms,
        event_type=event.type,
        rating=event.rating,
        covisited=covisited,
        source=source,
    )
    if not symmetric:
        return [own]
    others = [
        ItemMsg(msg_id=event.event_id, item_id=other, ts_ms=ts_ms, covisited=[event.item_id], source=source)
        for other in covisited
    ]
    return [own, *others]
