"""What the worker does with each batch of messages, kept apart from Faust's plumbing.

The agents in ``streamrec.stream.app`` hand ``EventProcessor`` batches of raw messages
(Faust ``take_events``); it runs them through the pipeline's stages, top to bottom:

1. ingest (stream/ingest.py): validate, bad payloads to the DLQ, a record on the wrong
   partition for its user sent on to the right one (features/routing.py);
2. user side (stream/user_side.py): apply each event to its user's state and its
   partition's global shard (an event refused as too late goes to the DLQ too, reason
   ``late``: every consumed event is applied, a duplicate of an applied one, or in the DLQ);
   queue the feature rows on the micro-batching writer;
3. item side (stream/item_side.py): send the item-side updates, one message per item
   partition; the item agent applies them to the items' states;
4. recommend (stream/recommend_stage.py): rank the triggering events here, or hand them
   over to the recommend role;
5. emit (stream/emit.py): send the lists and cache them.

All of it happens before Faust acknowledges the batch. This module holds the state
tables and writes them to their changelogs (:meth:`EventProcessor.flush_state`); the
stages are handed their clients (stream/clients.py), the tests hand fakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.features.global_state import GlobalShard
from streamrec.features.item_state import ItemState
from streamrec.features.routing import RoutingSink
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import UserState
from streamrec.stream.clients import Clients, build_clients
from streamrec.stream.debounce import Debouncer
from streamrec.stream.emit import Emitter
from streamrec.stream.ingest import DeadLetters, Ingest
from streamrec.stream.item_side import ItemSide, item_partition
from streamrec.stream.metrics import GcPauses, WorkerMetrics
from streamrec.stream.online_refill import item_row, shard_row, user_row
from streamrec.stream.ports import Consumed, RawMessage, Sink
from streamrec.stream.rec_cache import UserVersion
from streamrec.stream.recommend import RecommendRequest
from streamrec.stream.recommend_stage import HandOver, RecommendStage, received_tasks
from streamrec.stream.settings import Settings
from streamrec.stream.state_table import StateTable
from streamrec.stream.user_side import UserSide


@dataclass(frozen=True)
class Stages:
    """The pipeline's stages, in the order a batch goes through them."""

    ingest: Ingest
    user_side: UserSide
    item_side: ItemSide
    recommend: RecommendStage | None  # where ranking happens (roles all, recommend)
    hand_over: HandOver | None  # the features role: ranking happens in another process
    emit: Emitter


class EventProcessor:
    """``dlq``, ``by_item``, ``recommendations``, ``to_recommend`` (the features role only)
    and ``reroute`` (``clickstream`` itself; None applies every record where it is) are
    the topics it sends on. ``clients``: built by :meth:`start` when not given."""

    def __init__(
        self,
        settings: Settings,
        *,
        users: Any,
        shards: Any,
        items: Any,
        dlq: Sink,
        by_item: Sink,
        recommendations: Sink,
        to_recommend: Sink | None = None,
        reroute: RoutingSink | None = None,
        clients: Clients | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.features
        live = settings.worker.state_cache_keys
        self.users = StateTable(users, UserState.from_dict, UserState.to_dict, UserState, max_live=live)
        self.shards = StateTable(shards, GlobalShard.from_dict, GlobalShard.to_dict, GlobalShard, max_live=live)
        self.items = StateTable(items, ItemState.from_dict, ItemState.to_dict, ItemState, max_live=live)
        self.dlq, self.by_item, self.recommendations = dlq, by_item, recommendations
        self.to_recommend, self.reroute = to_recommend, reroute
        self.metrics = WorkerMetrics(settings.worker.id)
        self.gc_pauses = GcPauses(self.metrics)
        self.clients: Clients | None = None
        self._stages: Stages | None = None
        # delivers every message sent so far (the worker's producer flush; not under exactly_once,
        # where a transaction holds them all): set by stream/app.py
        self.flush_outputs: Callable[[], Awaitable[None]] | None = None
        # The agents' batches (clickstream, by_item) change states and queue their effects
        # (rows, item messages, dead letters) under _applying; a flush takes its cut of the
        # tables under it, so no batch is half in a cut. _flushing keeps flushes in order: an
        # earlier cut sent after a later one would overwrite its changelog keys.
        self._applying = asyncio.Lock()
        self._flushing = asyncio.Lock()
        if clients is not None:
            self._assemble(clients)

    def _assemble(self, clients: Clients) -> None:
        s, metrics = self.settings, self.metrics
        dead_letters = DeadLetters(self.dlq, s.topics.clickstream, metrics)
        emit = Emitter(self.recommendations, clients.cache, metrics, worker_id=s.worker.id)
        recommend = None
        if clients.recommender is not None:
            debouncer: Debouncer[RecommendRequest] = Debouncer(s.recommend.debounce_ms / 1000.0)
            recommend = RecommendStage(clients.recommender, debouncer, emit, metrics)
        self.clients = clients
        self._stages = Stages(
            ingest=Ingest(dead_letters, self.reroute, metrics, partitions=s.broker.partitions,
                          max_event_bytes=s.worker.max_event_bytes, allow_unknown_fields=s.worker.allow_unknown_fields),
            user_side=UserSide(self.users, self.shards, clients.writer, self.cfg, dead_letters, metrics,
                               triggers=frozenset(s.recommend.trigger_types)),
            item_side=ItemSide(self.items, self.by_item, clients.writer, self.cfg, metrics,
                               partitions=s.broker.partitions),
            recommend=recommend,
            hand_over=None if self.to_recommend is None else HandOver(self.to_recommend, metrics),
            emit=emit,
        )

    @property
    def stages(self) -> Stages:
        assert self._stages is not None, "start() first, or give the processor its clients"
        return self._stages

    async def start(self) -> None:
        self.gc_pauses.install()
        if self.clients is None:
            self._assemble(await build_clients(self.settings))
        if self.stages.recommend is not None:
            self.refresh_model_info()
            self.metrics.count("scoring_errors", 0)  # exported from the start, not from the first failure

    def refresh_model_info(self) -> None:
        if self.clients is not None and self.clients.recommender is not None:
            self.metrics.model_version = self.clients.recommender.model_version
            self.metrics.provider = self.clients.recommender.provider

    async def stop(self) -> None:
        self.gc_pauses.uninstall()
        if self.clients is not None:
            await self.clients.close()  # the writer first: it flushes what is pending

    async def flush_state(self) -> int:
        """Write feature rows, then changed states to their tables' changelogs; call before
        committing offsets. The order is what a crash (SIGKILL) leaves consistent, since a
        restarted worker skips the records its users' restored states applied: Redis rows
        are never behind the changelog (a user whose state was written but whose row was not
        kept a stale row for good), and the global shards, with every output sent before
        them (item messages, lists), are delivered before the users' states (a user ahead of
        its shard lost the shard's counts; a shard ahead counts a record once, by offset:
        features/global_state.py).

        The states sent are one cut, taken between batches: the other agent's batch, run
        while this flush waits on Redis or the producer, goes to the next flush whole. (Taken
        table by table as they were sent, a batch run meanwhile reached the users' changelog
        without its shard's: after a SIGKILL its records were skipped by the users and never
        counted by the shard.)"""
        async with self._flushing:
            async with self._applying:
                shards, users, items = self.shards.take(), self.users.take(), self.items.take()
            if self.clients is not None:
                await self.clients.writer.flush()  # every row queued before the cut, and maybe later ones
            sent = await self.shards.send(shards)
            if self.flush_outputs is not None:
                await self.flush_outputs()
            return sent + await self.users.send(users) + await self.items.send(items)

    async def before_commit(self) -> None:
        """Everything the consumed events changed is sent before their offsets commit:
        feature rows to Redis, states to their changelogs (the producer is flushed next)."""
        await self.flush_state()

    async def flush_state_if_due(self) -> int:
        """Flush (:meth:`flush_state`) once ``worker.state_flush_keys`` states of a table are
        pending, so no single flush (encoding + changelog sends, ~50 µs a key) stalls the loop for long."""
        limit = self.settings.worker.state_flush_keys
        if any(table.pending >= limit for table in (self.users, self.shards, self.items)):
            return await self.flush_state()
        return 0

    async def forget_state(self) -> None:
        """Around a rebalance: flush, then drop decoded states another worker may now own."""
        await self.flush_state()
        for table in (self.users, self.shards, self.items):
            table.forget()

    async def refill_online_if_lost(self, clickstream: set[int], by_item: set[int]) -> int | None:
        """When Redis lost this worker's marker, set it and rewrite the rows of the users,
        global shards (``clickstream`` partitions) and items (``by_item`` partitions) it
        owns (stream/online_refill.py); how many rows, None when nothing was lost."""
        assert self.clients is not None and self.clients.marker is not None
        marker, writer = self.clients.marker, self.clients.writer
        if await marker.present():
            return None
        first = not marker.written
        await marker.set()  # first: were Redis lost again meanwhile, the next check refills again
        if first:  # a worker's first check: nothing of its own was there to lose (stream/online_refill.py)
            return None
        n = self.settings.broker.partitions
        makers: list[tuple[StateTable[Any], Callable[[str, Any], FeatureRow | None]]] = [
            (self.users, lambda key, s: user_row(key, s, clickstream)),
            (self.shards, lambda key, s: shard_row(key, s, clickstream)),
            (self.items, lambda key, s: item_row(key, s, by_item, lambda i: item_partition(i, n), self.cfg)),
        ]
        written = 0
        for table, make in makers:
            keys = table.keys()
            for start in range(0, len(keys), self.cfg.batch_size):
                # made and queued with no await between: the writer keeps them in order with the agents' rows
                rows = [row for key in keys[start:start + self.cfg.batch_size]
                        if (state := table.peek(key)) is not None and (row := make(key, state)) is not None]
                await writer.submit(rows)
                written += len(rows)
        await writer.flush()
        self.metrics.count("online_refills")
        self.metrics.count("online_refill_rows", written)
        return written

    # -- the agents ------------------------------------------------------------------
    async def on_clickstream(self, batch: Sequence[Consumed]) -> None:
        """Process (message, partition, offset) triples from ``clickstream``."""
        stages = self.stages
        began, began_wall = time.perf_counter(), time.time()
        self.metrics.count("events_in", len(batch))
        async with self._applying:
            events = await stages.ingest.admit(batch)
            applied = await stages.user_side.apply(events)  # and their rows queued
            await stages.item_side.send(applied.item_messages)
        self.metrics.count("events_valid", applied.events)
        self.metrics.observe("user_update", (time.perf_counter() - began) * 1000 / len(batch))
        await self._recommend(applied.to_rank, applied.versions, began_wall)
        await self.flush_state_if_due()

    async def _recommend(self, to_rank: list[RecommendRequest], stale: Mapping[str, UserVersion],
                         batch_began: float) -> None:
        """Rank here (the cache entries of these users are replaced by their new lists or
        dropped), or drop the users' cached lists and hand the requests over."""
        stages = self.stages
        if to_rank and stages.hand_over is None:
            assert stages.recommend is not None
            await stages.recommend.offer(to_rank, stale=stale, batch_began=batch_began)
            return
        await stages.emit.invalidate(stale)  # their cached lists are stale now
        if to_rank and stages.hand_over is not None:
            await stages.hand_over.send(to_rank)

    async def on_recommend_tasks(self, batch: Sequence[RawMessage]) -> None:
        """The recommend role: rank for tasks that the features role handed over."""
        assert self.stages.recommend is not None
        await self.stages.recommend.offer(received_tasks(batch, self.metrics))

    async def release_debounced(self) -> None:
        """Rank the held requests whose debounce window has ended (called by a timer)."""
        if self.stages.recommend is not None:
            await self.stages.recommend.release_due()

    async def on_item_batch(self, batch: Sequence[Consumed]) -> None:
        """Process messages from the repartition topic, each a JSON list of ItemMsg."""
        began = time.perf_counter()
        async with self._applying:  # see flush_state
            n = await self.stages.item_side.apply(batch)
        if n:
            self.metrics.observe("item_update", (time.perf_counter() - began) * 1000 / n)
        self.metrics.count("item_updates", n)
        await self.flush_state_if_due()
