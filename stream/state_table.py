"""Decoded state objects over a Faust table, written back before each offset commit.

Faust sends a changelog message, and the state is encoded, on every
``table[key] = value``; at several updates per event that is most of a worker's
work. ``StateTable`` keeps decoded state objects in memory, remembers which ones
changed, and ``flush`` writes each changed key once (the worker calls it before each
offset commit, and sooner once ``worker.state_flush_keys`` are pending, so one flush
never stalls the event loop for long): into the table's local store
and to its changelog partition, which the caller names (the partition of the
message that owns the key), so it works outside Faust's per-event context too.

Correctness: the worker calls ``flush`` before every offset commit, with no batch in
progress (``StreamrecApp.commit_gate``), then flushes the producer. ``flush`` hands
each message to the producer itself and awaits it: Faust's ``table[key] = value`` path
(``send_soon``) goes through a buffer whose flush gives up after 100 ms with messages
still queued, so a commit could pass a changelog write (under exactly_once it then
landed in the next transaction, and a crash lost it). A committed offset therefore
always implies a sent changelog; a crash loses only uncommitted work, which is
redelivered and re-applied. On a rebalance the worker flushes and then ``forget``s
the decoded objects, since another worker may own those keys next.

Memory: the local store holds each state encoded, as its JSON bytes (the changelog's
bytes, so the tables are declared with the ``raw`` value serializer), 0.5-1 KB a user in
the soak, copied to their exact size (orjson's own output keeps its spare buffer: about
twice the memory). Decoded objects, several times larger and each a handful of objects
for the garbage collector to scan, are kept only for the ``max_live`` most recently used
keys (``worker.state_cache_keys``, and every changed one until it is flushed). A worker's
memory then grows with its users' encoded bytes, not with their decoded objects: with
every state decoded, a 10-minute soak over 20,000 users grew the worker's RSS by 39% after
its warm-up; with 10,000 decoded per table and orjson's buffers kept, by 19%; with 1,000
and exact-size bytes, by 8.8% (about 0.3 ms more CPU per event than with 2,000 in that
soak: more decoding; README.md, the soak row).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any, Generic, TypeVar

import orjson

S = TypeVar("S")
ChangelogSend = Callable[[int, str, Any], Awaitable[Any]]


def changelog_sender(table: Any) -> ChangelogSend:
    """Send (partition, key, value) to a Faust table's changelog now (not through the buffer);
    ``value`` is what the table's local store holds (JSON bytes for a ``raw`` table)."""
    topic = table.changelog_topic

    async def send(partition: int, key: str, value: Any) -> Any:
        return await topic.send(key=key, value=value, partition=partition, key_serializer=table.key_serializer,
                                value_serializer=table.value_serializer, force=True)

    return send


def _compact(encoded: bytes) -> bytes:
    """An exact-size copy of ``encoded``. orjson returns its output in the buffer it wrote
    into, with room to spare (a 500-byte state held 1 to 4 KB), and these bytes are kept
    for as long as the key lives; the copy costs about a microsecond."""
    return memoryview(encoded).tobytes()


class StateTable(Generic[S]):
    """``decode``/``encode`` turn a state into a JSON-safe dict and back; the store holds
    ``orjson.dumps`` of that dict. ``max_live``: how many decoded states to keep."""

    def __init__(
        self,
        table: Any,
        decode: Callable[[dict[str, Any]], S],
        encode: Callable[[S], dict[str, Any]],
        factory: Callable[[], S],
        *,
        max_live: int = 1_000,
    ) -> None:
        if max_live < 1:
            raise ValueError("max_live must be at least 1")
        self.table = table
        self._send: ChangelogSend | None = None  # made on the first flush (the recommend role has no tables)
        self._decode = decode
        self._encode = encode
        self._factory = factory
        self._max_live = max_live
        self._live: dict[str, S] = {}  # least recently used first
        self._dirty: dict[str, int] = {}  # key -> changelog partition

    def get(self, key: str) -> S:
        """The current state for ``key`` (a new one when absent); changes need ``mark``,
        before the next ``get`` of another key could evict this one (the callers mark each
        state right after changing it, with no await between)."""
        live = self._live
        state = live.pop(key, None)
        if state is None:
            state = self._stored(key)
            if state is None:
                state = self._factory()
            if len(live) >= self._max_live:
                self._evict_clean()
        live[key] = state  # the most recently used: last
        return state

    def keys(self) -> list[str]:
        """Every key with a state here: decoded ones and those in the table's local store."""
        return list(dict.fromkeys([*self._live, *self.table.data.keys()]))

    def peek(self, key: str) -> S | None:
        """The current state of ``key`` without keeping a decoded copy; None when absent."""
        state = self._live.get(key)
        return self._stored(key) if state is None else state

    def _stored(self, key: str) -> S | None:
        """A fresh decoded copy of ``key``'s state in the local store; None when absent."""
        stored = self.table.data.get(key)
        return None if stored is None else self._decode(orjson.loads(stored))

    def mark(self, key: str, state: S, partition: int) -> None:
        """Record that ``state`` (from ``get``) changed; it is written on the next flush."""
        self._live[key] = state
        self._dirty[key] = partition

    def dirty(self) -> list[tuple[str, S]]:
        """The keys and states changed since the last flush."""
        return [(key, self._live[key]) for key in self._dirty]

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def flush(self) -> int:
        """Write every changed key once (local store + changelog); returns how many.
        Returns once each message is with the producer (delivery: the producer's flush)."""
        return await self.send(self.take())

    def take(self) -> list[tuple[int, str, Any]]:
        """Encode every changed state now, into the local store too, and forget that it
        changed: (partition, key, value) for :meth:`send`. Taking the tables' changes with
        no await between them is what makes them one consistent cut of the batches."""
        dirty, self._dirty = self._dirty, {}
        taken = []
        encode, live, data = self._encode, self._live, self.table.data
        for key, partition in dirty.items():
            value = _compact(orjson.dumps(encode(live[key])))
            data[key] = value
            taken.append((partition, key, value))
        return taken

    async def send(self, taken: list[tuple[int, str, Any]]) -> int:
        """Hand what :meth:`take` returned to the changelog; returns how many."""
        if not taken:
            return 0
        if self._send is None:
            self._send = changelog_sender(self.table)
        send = self._send
        for partition, key, value in taken:
            await send(partition, key, value)
        return len(taken)

    def forget(self) -> None:
        """Drop the decoded objects (after a flush): the next ``get`` reads the table."""
        if self._dirty:
            raise RuntimeError("forget() with unflushed changes; flush first")
        self._live.clear()

    def _evict_clean(self) -> None:
        """Drop the least recently used clean states, down to three quarters of ``max_live``
        (one pass now and then rather than one key per ``get``); changed ones stay."""
        live, dirty = self._live, self._dirty
        excess = max(len(live) - self._max_live * 3 // 4, 0)
        for key in list(islice((key for key in live if key not in dirty), excess)):
            del live[key]
