"""Which events an entity has already applied: exact idempotency in bounded memory.

An entity remembers the ids of the events it applied whose event time is above a
*floor*. The floor rises to ``newest - allowed_lateness`` and, when more than
``max_ids`` ids are held, to the time of the oldest id it forgets. The rule:

    an event is applied  iff  ts > floor  and  its id is not remembered.

Every id applied with ``ts > floor`` is still remembered, so a redelivered event
is either remembered (duplicate) or at/below the floor (late): never applied twice.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["new", "duplicate", "late"]


def _ts_of(entry: tuple[int, str]) -> int:
    return entry[0]


@dataclass
class EventWindow:
    floor_ms: int | None = None
    entries: list[tuple[int, str]] = field(default_factory=list)  # sorted (ts_ms, event_id)
    _ids: set[str] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._ids = {event_id for _, event_id in self.entries}

    def check(self, event_id: str, ts_ms: int) -> Verdict:
        if self.floor_ms is not None and ts_ms <= self.floor_ms:
            return "late"
        if event_id in self._ids:
            return "duplicate"
        return "new"

    def remember(self, event_id: str, ts_ms: int, newest_ms: int, lateness_ms: int, max_ids: int) -> None:
        """Record an applied event, then raise the floor and forget what falls below it."""
        bisect.insort(self.entries, (ts_ms, event_id))
        self._ids.add(event_id)
        self._raise_floor(newest_ms - lateness_ms)
        while len(self.entries) > max_ids:
            self._raise_floor(self.entries[0][0])

    def _raise_floor(self, floor_ms: int) -> None:
        if self.floor_ms is not None and floor_ms <= self.floor_ms:
            return
        self.floor_ms = floor_ms
        cut = bisect.bisect_right(self.entries, floor_ms, key=_ts_of)
        for _, event_id in self.entries[:cut]:
            self._ids.discard(event_id)
        del self.entries[:cut]

    def to_dict(self) -> dict[str, Any]:
        # (ts, id) tuples are immutable and JSON arrays already: a shallow copy is enough
        return {"floor_ms": self.floor_ms, "entries": list(self.entries)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventWindow:
        floor = data.get("floor_ms")
        entries = [(int(ts), str(eid)) for ts, eid in data.get("entries", [])]
        return cls(floor_ms=None if floor is None else int(floor), entries=entries)
