"""What the worker does with each batch of messages, kept apart from Faust's plumbing.

``EventProcessor`` holds the online-feature writer, the recommender and the metrics;
the agents in ``streamrec.stream.app`` hand it batches of raw messages (Faust ``take_events``).
Feature formulas live in ``features/``, ranking behind ``streamrec.stream.recommend.Recommender``:
this module only sequences them, batches the I/O and measures each stage.

Per batch, in order: validate (bad payloads to the DLQ) → send an event on the wrong
partition for its user on to the right one (features/routing.py) → apply each event to its
user's state (an event refused as too late goes to the DLQ too, reason ``late``:
every consumed event is applied, a duplicate of an applied one, or in the DLQ) →
write changed states to their tables (changelog) once → queue the feature rows on
the micro-batching writer → send the item-side updates, one message per item
partition → rank and send recommendations for the triggering events.
All of it happens before Faust acknowledges the batch.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from streamrec.features.batching import MicroBatchWriter
from streamrec.features.global_state import GlobalShard, shard_id
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.messages import (ITEM_BATCH, DeadLetter, ItemMsg, Recommendation, RecommendTask, Rejection,
                                         StageLatency, parse_record)
from streamrec.features.online import RedisFeatureStore
from streamrec.features.routing import RoutingSink, routed_from, routed_header, user_partition
from streamrec.features.schema import USER_VIEW, FeatureRow
from streamrec.features.user_state import Skipped, UserState, apply_user_event
from streamrec.stream.debounce import Debouncer
from streamrec.stream.metrics import GcPauses, WorkerMetrics
from streamrec.stream.online_refill import Marker, item_row, shard_row, user_row
from streamrec.stream.rec_cache import RecommendationCache, UserVersion
from streamrec.stream.recommend import RecommendRequest, Recommender, TopMeanRecommender, coalesce
from streamrec.stream.settings import Settings
from streamrec.stream.state_table import StateTable


class Sink(Protocol):
    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None) -> Any: ...


class RawMessage(Protocol):
    """What the processor needs of a consumed message (Faust's ``Event`` fits)."""

    key: bytes | None
    value: bytes


def user_version(state: UserState) -> UserVersion:
    """Events applied to the user's state: orders the user's cached lists (stream/rec_cache.py)."""
    return sum(state.activity.counts.values())


def item_partition(item_id: str, partitions: int) -> int:
    """The repartition topic's partition for an item: stable across processes and languages."""
    return zlib.crc32(item_id.encode()) % partitions


class EventProcessor:
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
    ) -> None:
        self.settings = settings
        self.cfg = settings.features
        self.users = StateTable(users, UserState.from_dict, UserState.to_dict, UserState)
        self.shards = StateTable(shards, GlobalShard.from_dict, GlobalShard.to_dict, GlobalShard)
        self.items = StateTable(items, ItemState.from_dict, ItemState.to_dict, ItemState)
        self.dlq, self.by_item, self.recommendations = dlq, by_item, recommendations
        self.to_recommend = to_recommend  # set in the features role: ranking happens in another process
        # clickstream itself: a record on another partition than its user's goes there (features/routing.py);
        # None applies every record where it is
        self.reroute = reroute
        self.metrics = WorkerMetrics(settings.worker.id)
        self.gc_pauses = GcPauses(self.metrics)
        self.triggers = frozenset(settings.recommend.trigger_types)
        self.debouncer: Debouncer[RecommendRequest] = Debouncer(settings.recommend.debounce_ms / 1000.0)
        self.store: RedisFeatureStore | None = None
        self.writer: MicroBatchWriter | None = None
        self.recommender: Recommender | None = None
        self.cache: RecommendationCache | None = None
        self.marker: Marker | None = None
        # delivers every message sent so far (the worker's producer flush; not under exactly_once,
        # where a transaction holds them all): set by stream/app.py
        self.flush_outputs: Callable[[], Awaitable[None]] | None = None
        # The agents' batches (clickstream, by_item) change states and queue their effects
        # (rows, item messages, dead letters) under _applying; a flush takes its cut of the
        # tables under it, so no batch is half in a cut. _flushing keeps flushes in order: an
        # earlier cut sent after a later one would overwrite its changelog keys.
        self._applying = asyncio.Lock()
        self._flushing = asyncio.Lock()

    async def start(self) -> None:
        self.gc_pauses.install()
        url, reconnect_s = self.settings.redis.effective_url, self.settings.redis.reconnect_s
        self.store = RedisFeatureStore.from_url(url, self.cfg, reconnect_s=reconnect_s)  # the process's one Redis pool
        self.marker = Marker(self.store, self.settings.worker.id)
        self.writer = MicroBatchWriter(self.store, batch_size=self.cfg.batch_size, flush_ms=self.cfg.flush_ms)
        rec = self.settings.recommend
        if rec.cache_ttl_s > 0:
            self.cache = RecommendationCache(self.store, rec.cache_ttl_s)
        if self.settings.worker.role != "features":
            self.recommender = self._build_recommender()
            await self.recommender.start()
            self.refresh_model_info()
            self.metrics.count("scoring_errors", 0)  # exported from the start, not from the first failure

    def _build_recommender(self) -> Recommender:
        assert self.store is not None
        rec = self.settings.recommend
        if rec.recommender == "top_mean":
            return TopMeanRecommender(self.store, top_k=rec.top_k, candidates=rec.candidates.max_candidates)
        from streamrec.models.watcher import ModelWatcher  # onnxruntime: only where ranking happens
        from streamrec.stream.ranking import RankingRecommender

        return RankingRecommender(self.store, ModelWatcher(self.settings.models, candidates=rec.candidates), rec.candidates,
                                  top_k=rec.top_k)

    def refresh_model_info(self) -> None:
        if self.recommender is not None:
            self.metrics.model_version = self.recommender.model_version
            self.metrics.provider = self.recommender.provider

    async def stop(self) -> None:
        self.gc_pauses.uninstall()
        if self.writer is not None:
            await self.writer.close()  # flushes what is pending
        if self.recommender is not None:
            await self.recommender.close()
        if self.store is not None:
            await self.store.close()
        if self.cache is not None:
            await self.cache.close()
        if self.marker is not None:
            await self.marker.close()

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
            if self.writer is not None:
                await self.writer.flush()  # every row queued before the cut, and maybe later ones
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
        assert self.marker is not None and self.writer is not None
        if await self.marker.present():
            return None
        first = not self.marker.written
        await self.marker.set()  # first: were Redis lost again meanwhile, the next check refills again
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
                await self.writer.submit(rows)
                written += len(rows)
        await self.writer.flush()
        self.metrics.count("online_refills")
        self.metrics.count("online_refill_rows", written)
        return written

    # -- clickstream -----------------------------------------------------------------
    async def on_clickstream(self, batch: Sequence[tuple[RawMessage, int, int]]) -> None:
        """Process (message, partition, offset) triples from ``clickstream``."""
        began, began_wall = time.perf_counter(), time.time()
        self.metrics.count("events_in", len(batch))
        async with self._applying:
            accepted_users, to_rank = await self._apply_clickstream(batch)
        self.metrics.count("events_valid", len(accepted_users))
        self.metrics.observe("user_update", (time.perf_counter() - began) * 1000 / len(batch))
        stale = {user: user_version(self.users.get(user)) for user in accepted_users}
        if to_rank and self.to_recommend is None:
            # the cache entries of these users are replaced by their new lists or deleted
            await self._recommend(to_rank, stale=stale, batch_began=began_wall)
        else:
            if self.cache is not None and stale:
                await self.cache.update([], stale)  # their cached lists are stale now
            if to_rank:
                await self._hand_over(to_rank)
        await self.flush_state_if_due()

    async def _apply_clickstream(
        self, batch: Sequence[tuple[RawMessage, int, int]]
    ) -> tuple[list[str], list[RecommendRequest]]:
        """Apply a batch to the states and queue its effects (rows, item messages, dead
        letters, reroutes); the accepted events' users and what to rank."""
        rows: list[FeatureRow] = []
        item_updates: dict[int, list[ItemMsg]] = defaultdict(list)
        to_rank: list[RecommendRequest] = []
        partitions = self.settings.broker.partitions
        for message, partition, offset in batch:
            parsed = parse_record(message.key, message.value or b"", max_bytes=self.settings.worker.max_event_bytes,
                                  allow_unknown_fields=self.settings.worker.allow_unknown_fields)
            if isinstance(parsed, Rejection):
                await self._dead_letter(message, parsed, partition, offset)
                continue
            if self.reroute is not None and (home := user_partition(parsed.user_id, partitions)) != partition:
                await self.reroute.send(key=message.key, value=message.value, partition=home,
                                        headers=routed_header(partition, offset))
                self.metrics.count("routed")
                continue
            state = self.users.get(parsed.user_id)
            result = apply_user_event(state, parsed, self.cfg, source=(partition, offset),
                                      origin=routed_from(getattr(message, "headers", None)))
            if isinstance(result, Skipped):
                self.metrics.count(f"skipped_{result.reason}")
                if result.reason == "late":  # refused, not applied: it goes where refused events go
                    await self._dead_letter(message, Rejection(reason="late", field="ts", detail=result.detail),
                                            partition, offset)
                continue
            self.users.mark(parsed.user_id, state, partition)
            shard_key = shard_id(partition)
            shard = self.shards.get(shard_key)
            shard.add(parsed, offset)
            self.shards.mark(shard_key, shard, partition)
            rows.append(result.row)
            for update in result.item_messages:
                item_updates[item_partition(update.item_id, partitions)].append(update)
            if parsed.type.value in self.triggers:
                to_rank.append(RecommendRequest(parsed.user_id, state, parsed))
        rows.extend(shard.row(key) for key, shard in self.shards.dirty())
        assert self.writer is not None
        await self.writer.submit(rows)
        for partition, updates in item_updates.items():
            await self.by_item.send(value=ITEM_BATCH.dump_json(updates, exclude_none=True), partition=partition)
        return [r.entity_id for r in rows if r.view == USER_VIEW], to_rank

    async def _hand_over(self, requests: list[RecommendRequest]) -> None:
        """One task per user (the batch's last event, covering the earlier ones: every
        request of a user in a batch carries the same state) to the recommend role."""
        assert self.to_recommend is not None
        now = time.time()
        latest = coalesce(requests)
        for r in latest:
            task = RecommendTask(cause=r.cause, state=r.state.to_dict(), enqueued_at=now, covers=list(r.covers))
            await self.to_recommend.send(key=r.user_id.encode(), value=task.model_dump_json().encode())
        self.metrics.count("coalesced", len(requests) - len(latest))
        self.metrics.count("handed_over", len(latest))

    async def on_recommend_tasks(self, batch: Sequence[RawMessage]) -> None:
        """The recommend role: rank for tasks that the features role handed over."""
        tasks = [RecommendTask.model_validate_json(m.value) for m in batch]
        now = time.time()
        for task in tasks:
            self.metrics.observe("handover", (now - task.enqueued_at) * 1000)
        await self._recommend([RecommendRequest(t.cause.user_id, UserState.from_dict(t.state), t.cause, tuple(t.covers))
                               for t in tasks])

    async def _dead_letter(self, message: RawMessage, rejection: Rejection, partition: int, offset: int) -> None:
        letter = DeadLetter.build(message.value or b"", rejection, source_topic=self.settings.topics.clickstream,
                                  partition=partition, offset=offset)
        await self.dlq.send(key=message.key, value=letter.model_dump_json().encode())
        self.metrics.count("dlq")
        self.metrics.count(f"dlq_{rejection.reason}")

    async def _recommend(self, requests: list[RecommendRequest], stale: Mapping[str, UserVersion] | None = None,
                         batch_began: float | None = None) -> None:
        """Rank one list per user (the last event covers the user's earlier ones), minus
        what the debounce holds; a held request covers the one it replaces."""
        now = time.monotonic()
        latest = coalesce(requests)
        ready = []
        for request in latest:
            held = self.debouncer.held_for(request.user_id)
            if held is not None:
                request = request.superseding(held)
            if self.debouncer.offer(request.user_id, request, now) is not None:
                ready.append(request)
        self.metrics.count("coalesced", len(requests) - len(latest))
        self.metrics.count("debounced", len(latest) - len(ready))
        if ready:
            await self._rank_and_send(ready, stale, batch_began)
        elif self.cache is not None and stale:
            await self.cache.update([], stale)

    def _count_scoring_errors(self) -> None:
        """Mirror the recommender's cumulative model failures in the ``scoring_errors`` counter."""
        assert self.recommender is not None
        new = self.recommender.scoring_errors - self.metrics.total_counts["scoring_errors"]
        if new > 0:
            self.metrics.count("scoring_errors", new)

    async def release_debounced(self) -> None:
        """Rank the held requests whose debounce window has ended (called by a timer)."""
        due = self.debouncer.due(time.monotonic())
        if due:
            await self._rank_and_send(due)

    async def _rank_and_send(self, requests: list[RecommendRequest], stale: Mapping[str, UserVersion] | None = None,
                             batch_began: float | None = None) -> None:
        """Rank, send each list, then cache them (and drop the ``stale`` users' entries).
        ``batch_began`` (epoch s): when these events' batch began, to time the stages before ranking."""
        assert self.recommender is not None
        began, began_wall = time.perf_counter(), time.time()
        ranked = await self.recommender.recommend_many(requests)
        per_request_ms = (time.perf_counter() - began) * 1000
        self._count_scoring_errors()
        now = datetime.now(timezone.utc)
        version = self.recommender.model_version
        emitted: list[tuple[str, UserVersion, bytes]] = []
        for request, result in zip(requests, ranked):
            cause = request.cause
            latency = StageLatency(
                candidates=round(result.stage_ms.get("candidates", 0.0), 3),
                features=round(result.stage_ms.get("features", 0.0), 3),
                scoring=round(result.stage_ms.get("scoring", 0.0), 3),
                total=round(per_request_ms, 3),
                event_to_emit=round((now - cause.ts).total_seconds() * 1000, 3),
                ingest=None if batch_began is None else round((batch_began - cause.ts.timestamp()) * 1000, 3),
                update=None if batch_began is None else round((began_wall - batch_began) * 1000, 3),
            )
            message = Recommendation(
                user_id=cause.user_id, items=result.items, model_version=version, cause_event_id=cause.event_id,
                event_ts=cause.ts, emitted_at=now, latency_ms=latency, worker_id=self.settings.worker.id,
                covers=list(request.covers),
            )
            payload = message.to_bytes()
            await self.recommendations.send(key=cause.user_id.encode(), value=payload)
            emitted.append((cause.user_id, user_version(request.state), payload))
            self.metrics.observe("event_to_emit", latency.event_to_emit or 0.0)
        if self.cache is not None:
            await self.cache.update(emitted, stale)
        for stage in ("candidates", "features", "scoring"):
            self.metrics.observe(stage, ranked[0].stage_ms.get(stage, 0.0) if ranked else 0.0)
        self.metrics.observe("recommend_total", per_request_ms)
        self.metrics.count("recommendations", len(requests))

    # -- item side -------------------------------------------------------------------
    async def on_item_batch(self, batch: Sequence[tuple[RawMessage, int, int]]) -> None:
        """Process messages from the repartition topic, each a JSON list of ItemMsg."""
        began = time.perf_counter()
        changed: dict[str, FeatureRow] = {}
        n = 0
        async with self._applying:  # see flush_state
            for message, partition, _offset in batch:
                for update in ITEM_BATCH.validate_json(message.value):
                    n += 1
                    state = self.items.get(update.item_id)
                    result = apply_item_event(state, update, self.cfg)
                    if isinstance(result, Skipped):
                        self.metrics.count(f"item_skipped_{result.reason}")
                        continue
                    self.items.mark(update.item_id, state, partition)
                    changed[update.item_id] = result.row
            assert self.writer is not None
            await self.writer.submit(list(changed.values()))
        if n:
            self.metrics.observe("item_update", (time.perf_counter() - began) * 1000 / n)
        self.metrics.count("item_updates", n)
        await self.flush_state_if_due()
