"""Which events an entity has already applied, and which come too late: three rules.

The update functions check them in this order; none of them costs a distinct event
its effect because of a bounded memory.

1. **Redelivery** (exact, O(1) per source partition): a ``clickstream`` record is
   its (partition, offset), and an entity's records arrive from a partition in
   offset order (users are keyed by user id; the item side keeps one mark per source
   partition). So a record is already applied iff its offset is at or below the
   highest offset the entity applied from that partition (:func:`redelivered`,
   :func:`mark_applied`). A consumer that restarts from an older offset after a
   crash re-reads only such records. A record that lands on another partition than its
   user's is not applied there but copied to the user's partition (features/routing.py);
   a second copy of the same original (sent again after a crash) is recognised by one
   more mark per source partition, on the originals' offsets (:func:`routed_source`).
2. **Re-sent events** (bounded, :class:`EventWindow`): a client may send the same
   event twice, as two records with two offsets. The window remembers the ids of the
   entity's last ``max_ids`` applied events and refuses those ids again. It forgets
   ids, it never refuses one it has not seen: a re-send that arrives after
   ``max_ids`` newer events of the entity is applied again, a distinct event is
   never refused. Ids older than the lateness bound are forgotten early (a re-send of
   one is refused by rule 3 anyway).
3. **Lateness** (event time, :func:`too_late`): an event older than the entity's
   newest applied event by *more* than ``allowed_lateness`` is refused as ``late``;
   the worker sends it to the DLQ with that reason. Events of the same instant are
   never late to each other, however many there are.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


def too_late(ts_ms: int, newest_ms: int | None, lateness_ms: int) -> bool:
    """Whether an event at ``ts_ms`` is older than ``newest_ms`` by more than ``lateness_ms``."""
    return newest_ms is not None and ts_ms < newest_ms - lateness_ms


Source = tuple[int | str, int]  # (partition, or a routed_source key; offset)


def redelivered(applied: dict[str, int], source: Source) -> bool:
    """Whether the record at ``source`` = (partition, offset) was applied already,
    given ``applied``: source partition (as a string, JSON-safe) → highest offset applied."""
    partition, offset = source
    return offset <= applied.get(str(partition), -1)


def mark_applied(applied: dict[str, int], source: Source) -> None:
    """Record that the record at ``source`` was applied (its offset is the partition's highest)."""
    partition, offset = source
    key = str(partition)
    applied[key] = max(offset, applied.get(key, -1))


def routed_source(origin: tuple[int, int]) -> Source:
    """Where the copies routed from ``origin`` = (partition, offset) of the original are
    marked in ``applied``: apart from that partition's own records, by the original offset."""
    partition, offset = origin
    return f"routed:{partition}", offset


@dataclass
class EventWindow:
    """The ids of an entity's most recently applied events, oldest arrival first.

    Bounded by ``max_ids`` (given to :meth:`remember`); O(1) per event amortised.
    """

    entries: deque[tuple[int, str]] = field(default_factory=deque)  # (ts_ms, event_id), in arrival order
    _ids: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.entries = deque(self.entries)
        self._ids = {event_id for _, event_id in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def seen(self, event_id: str) -> bool:
        """Whether ``event_id`` is among the remembered applied events."""
        return event_id in self._ids

    def remember(self, event_id: str, ts_ms: int, horizon_ms: int, max_ids: int) -> None:
        """Record an applied event; then forget the oldest arrivals while more than
        ``max_ids`` are held or while the oldest one's time is below ``horizon_ms``
        (the oldest event time that is not late)."""
        self.entries.append((ts_ms, event_id))
        self._ids.add(event_id)
        entries = self.entries
        while entries and (len(entries) > max_ids or entries[0][0] < horizon_ms):
            self._ids.discard(entries.popleft()[1])

    def to_dict(self) -> dict[str, Any]:
        # (ts, id) tuples are immutable and JSON arrays already: a shallow copy is enough
        return {"entries": list(self.entries)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventWindow:
        """Also reads the earlier layout (``floor_ms`` + entries sorted by time): the
        floor is dropped, lateness is decided by the entity's newest event time now."""
        return cls(entries=deque((int(ts), str(eid)) for ts, eid in data.get("entries", [])))
