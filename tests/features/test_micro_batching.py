from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from streamrec.features.batching import MicroBatchWriter
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import USER_VIEW, FeatureRow

pytestmark = pytest.mark.integration


def _row(user: str, count: int, touched: tuple[str, ...] = ()) -> FeatureRow:
    return FeatureRow(USER_VIEW, user, {"event_count": count}, count, touched)


class Flushes:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, rows: Sequence[FeatureRow], written_at: float) -> None:
        self.sizes.append(len(rows))


async def test_flushes_when_the_batch_is_full(store: RedisFeatureStore) -> None:
    flushes = Flushes()
    writer = MicroBatchWriter(store, batch_size=3, flush_ms=60_000, on_flush=flushes)
    await writer.submit([_row("a", 1), _row("b", 1)])
    assert flushes.sizes == [] and writer.pending == 2
    await writer.submit([_row("c", 1)])
    assert flushes.sizes == [3] and writer.pending == 0
    assert await store.read_batch(USER_VIEW, ["a", "c"], ["event_count"]) == [{"event_count": 1}] * 2


async def test_flushes_after_flush_ms(store: RedisFeatureStore) -> None:
    flushes = Flushes()
    writer = MicroBatchWriter(store, batch_size=1000, flush_ms=20, on_flush=flushes)
    await writer.submit([_row("a", 1)])
    await asyncio.sleep(0.2)
    assert flushes.sizes == [1]
    assert await store.read_batch(USER_VIEW, ["a"], ["event_count"]) == [{"event_count": 1}]
    await writer.close()


async def test_last_row_per_entity_wins_and_touched_items_accumulate(store: RedisFeatureStore) -> None:
    flushes = Flushes()
    writer = MicroBatchWriter(store, batch_size=1000, flush_ms=60_000, on_flush=flushes)
    await writer.submit([_row("a", 1, ("x",)), _row("b", 1), _row("a", 2, ("y",)), _row("a", 3, ("x",))])
    await writer.flush()
    assert flushes.sizes == [2]
    assert await store.read_batch(USER_VIEW, ["a"], ["event_count"]) == [{"event_count": 3}]
    assert await store.seen_items("a") == {"x", "y"}


async def test_close_writes_everything_pending(store: RedisFeatureStore) -> None:
    writer = MicroBatchWriter(store, batch_size=1000, flush_ms=60_000)
    await writer.submit([_row(f"u{n}", n) for n in range(50)])
    await writer.close()
    rows = await store.read_batch(USER_VIEW, [f"u{n}" for n in range(50)], ["event_count"])
    assert [r["event_count"] for r in rows] == list(range(50))


async def test_a_failed_background_write_surfaces_on_the_next_call(features_cfg) -> None:  # type: ignore[no-untyped-def]
    dead = RedisFeatureStore.from_url("redis://127.0.0.1:1/0", features_cfg)
    writer = MicroBatchWriter(dead, batch_size=1000, flush_ms=1)
    await writer.submit([_row("a", 1)])
    await asyncio.sleep(0.2)
    with pytest.raises(Exception, match="(?i)connect"):
        await writer.submit([_row("b", 1)])
    await dead.close()


async def test_the_first_write_waits_for_its_hook_once_and_a_failed_hook_is_tried_again(
    store: RedisFeatureStore,
) -> None:
    """The worker sets its online-store marker in this hook (stream/online_refill.py): no row
    of the process may reach Redis before it."""
    calls: list[list[dict[str, int | None]]] = []

    async def before_first_write() -> None:
        calls.append(await store.read_batch(USER_VIEW, ["h1", "h2"], ["event_count"]))  # what Redis holds then
        if len(calls) == 1:
            raise ConnectionError("redis away")

    writer = MicroBatchWriter(store, batch_size=1000, flush_ms=60_000, before_first_write=before_first_write)
    await writer.submit([_row("h1", 1)])
    with pytest.raises(ConnectionError):
        await writer.flush()
    await writer.submit([_row("h2", 2)])
    await writer.flush()
    await writer.submit([_row("h1", 3)])
    await writer.flush()

    assert calls == [[{"event_count": None}] * 2] * 2  # before any row, twice: the first attempt failed
    assert await store.read_batch(USER_VIEW, ["h1", "h2"], ["event_count"]) == [{"event_count": 3}, {"event_count": 2}]
