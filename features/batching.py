"""Micro-batching in front of an :class:`~streamrec.features.online.OnlineFeatureStore`.

Rows are coalesced per (view, entity): within one batch only the last row of an
entity is written (rows are whole states, so nothing is lost), with the
``touched`` item ids of all its rows united. A batch is written when it holds
``batch_size`` entities or ``flush_ms`` after its first row, whichever is first.
Batches are written one at a time, in order, so an entity's rows never overtake
each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from streamrec.features.online import OnlineFeatureStore
from streamrec.features.schema import FeatureRow

FlushHook = Callable[[Sequence[FeatureRow], float], None]
FirstWriteHook = Callable[[], Awaitable[None]]


class MicroBatchWriter:
    """Not thread-safe: use from the event loop that runs the agents.

    ``on_flush(rows, written_at)`` is called after each successful write with
    ``time.time()`` of its completion (for freshness metrics). A failed write is
    raised from the next :meth:`submit` or :meth:`flush`; its rows are lost to
    this writer, and the caller decides (the worker should stop and let the
    changelog-backed state rewrite on restart).

    ``before_first_write()`` is awaited before this writer's first row reaches the
    store, until it succeeds once (the worker sets its online-store marker there,
    stream/online_refill.py).
    """

    def __init__(
        self, store: OnlineFeatureStore, batch_size: int, flush_ms: float, on_flush: FlushHook | None = None,
        before_first_write: FirstWriteHook | None = None,
    ) -> None:
        self._store = store
        self._before_first_write = before_first_write
        self._batch_size = batch_size
        self._flush_s = flush_ms / 1000.0
        self._on_flush = on_flush
        self._pending: dict[tuple[str, str], FeatureRow] = {}
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def submit(self, rows: Sequence[FeatureRow]) -> None:
        """Queue rows; awaits a write only when the batch is full (backpressure)."""
        self._raise_failure()
        for row in rows:
            key = (row.view, row.entity_id)
            earlier = self._pending.pop(key, None)
            if earlier is not None and earlier.touched:
                row = replace(row, touched=tuple(dict.fromkeys(earlier.touched + row.touched)))
            self._pending[key] = row
        if len(self._pending) >= self._batch_size:
            await self.flush()
        elif self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._flush_soon)

    async def flush(self) -> None:
        """Write everything queued so far and wait for it (use on shutdown too)."""
        self._cancel_timer()
        async with self._lock:
            batch = list(self._pending.values())
            self._pending.clear()
            if batch:
                if self._before_first_write is not None:
                    await self._before_first_write()
                    self._before_first_write = None
                await self._store.write_batch(batch)
                if self._on_flush is not None:
                    self._on_flush(batch, time.time())
        self._raise_failure()

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._background_flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background_flush(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # surfaced to the next caller, see class docstring
            self._error = exc

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def close(self) -> None:
        """Flush what is queued and wait for background writes; the store stays open."""
        await self.flush()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self._raise_failure()
