"""Decoded state objects over a Faust table, written back once per batch.

Faust sends a changelog message on every ``table[key] = value``; at several updates
per event that is most of a worker's work. ``StateTable`` hands out decoded state
objects, remembers which ones changed, and ``flush`` writes each changed key once:
into the table's local store and to its changelog partition, which the caller names
(the partition of the message that owns the key), so it also works outside Faust's
per-event context (batches from ``take_events``).

``flush`` must run before the batch's events are acknowledged: Faust flushes its
producer before committing offsets, so a committed offset implies a sent changelog.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

S = TypeVar("S")


class StateTable(Generic[S]):
    def __init__(
        self,
        table: Any,
        decode: Callable[[dict[str, Any]], S],
        encode: Callable[[S], dict[str, Any]],
        factory: Callable[[], S],
    ) -> None:
        self.table = table
        self._decode = decode
        self._encode = encode
        self._factory = factory
        self._dirty: dict[str, tuple[S, int]] = {}

    def get(self, key: str) -> S:
        """The current state for ``key`` (a new one when absent); changes need ``mark``."""
        pending = self._dirty.get(key)
        if pending is not None:
            return pending[0]
        stored = self.table.data.get(key)
        return self._decode(stored) if stored is not None else self._factory()

    def mark(self, key: str, state: S, partition: int) -> None:
        """Record that ``state`` (from ``get``) changed; it is written on the next flush."""
        self._dirty[key] = (state, partition)

    def changed(self) -> list[tuple[str, S]]:
        """The keys and states marked since the last flush."""
        return [(key, state) for key, (state, _) in self._dirty.items()]

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def flush(self) -> int:
        """Write every changed key once (local store + changelog); returns how many."""
        for key, (state, partition) in self._dirty.items():
            value = self._encode(state)
            self.table.data[key] = value
            self.table.send_changelog(partition, key, value)
        written = len(self._dirty)
        self._dirty.clear()
        return written
