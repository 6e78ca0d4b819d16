"""What the worker does with each message, kept apart from Faust's plumbing.

``EventProcessor`` holds the online-feature writer, the recommender and the metrics;
the agents in ``stream.app`` hand it raw messages. Feature formulas live in
``features/``, ranking behind ``stream.recommend.Recommender``: this module only
sequences them and measures each stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from datetime import datetime, timezone
from typing import Any, Protocol

from features.global_state import GlobalShard, shard_id
from features.item_state import ItemState, apply_item_event
from features.batching import MicroBatchWriter
from features.online import RedisFeatureStore
from features.user_state import ItemMsg, Skipped, UserState, apply_user_event
from stream.metrics import WorkerMetrics
from stream.recommend import Recommender, TopMeanRecommender
from stream.schemas import ClickEvent, DeadLetter, Recommendation, Rejection, StageLatency, parse_event
from stream.settings import Settings

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def send(self, *, key: bytes | None = None, value: bytes | None = None) -> Any: ...


class EventProcessor:
    def __init__(
        self,
        settings: Settings,
        *,
        users: MutableMapping[str, Any],
        shards: MutableMapping[str, Any],
        items: MutableMapping[str, Any],
        dlq: Sink,
        by_item: Sink,
        recommendations: Sink,
    ) -> None:
        self.settings = settings
        self.cfg = settings.features
        self.users, self.shards, self.items = users, shards, items
        self.dlq, self.by_item, self.recommendations = dlq, by_item, recommendations
        self.metrics = WorkerMetrics(settings.worker.id)
        self.triggers = frozenset(settings.recommend.trigger_types)
        self.store: RedisFeatureStore | None = None
        self.writer: MicroBatchWriter | None = None
        self.recommender: Recommender | None = None

    async def start(self) -> None:
        self.store = RedisFeatureStore.from_url(self.settings.redis.effective_url, self.cfg)
        self.writer = MicroBatchWriter(self.store, batch_size=self.cfg.batch_size, flush_ms=self.cfg.flush_ms)
        rec = self.settings.recommend
        self.recommender = TopMeanRecommender(self.store, top_k=rec.top_k, candidates=rec.candidates)
        self.metrics.model_version = self.recommender.model_version
        self.metrics.provider = self.recommender.provider

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.close()  # flushes what is pending
        if self.store is not None:
            await self.store.close()

    # -- clickstream -----------------------------------------------------------------
    async def on_clickstream(self, key: bytes | None, raw: bytes, partition: int, offset: int) -> None:
        began = time.perf_counter()
        self.metrics.count("events_in")
        parsed = parse_event(raw or b"", max_bytes=self.settings.worker.max_event_bytes,
                             allow_unknown_fields=self.settings.worker.allow_unknown_fields)
        if isinstance(parsed, Rejection):
            await self._dead_letter(key, raw or b"", parsed, partition, offset)
            return
        validated = time.perf_counter()
        self.metrics.observe("validate", (validated - began) * 1000)
        state = self._user_state(parsed.user_id)
        result = apply_user_event(state, parsed, self.cfg)
        if isinstance(result, Skipped):
            self.metrics.count(f"skipped_{result.reason}")
            return
        self.users[parsed.user_id] = state.to_dict()
        shard = self._shard(partition)
        shard.add(parsed)
        self.shards[shard_id(partition)] = shard.to_dict()
        assert self.writer is not None
        await self.writer.submit((result.row, shard.row(shard_id(partition))))
        for message in result.item_messages:
            await self.by_item.send(key=message.item_id.encode(), value=message.to_bytes())
        self.metrics.observe("user_update", (time.perf_counter() - validated) * 1000)
        self.metrics.count("events_valid")
        if parsed.type.value in self.triggers:
            await self._recommend(parsed, state)

    async def _dead_letter(self, key: bytes | None, raw: bytes, rejection: Rejection, partition: int, offset: int) -> None:
        letter = DeadLetter.build(raw, rejection, source_topic=self.settings.topics.clickstream,
                                  partition=partition, offset=offset)
        await self.dlq.send(key=key, value=letter.model_dump_json().encode())
        self.metrics.count("dlq")
        self.metrics.count(f"dlq_{rejection.reason}")

    async def _recommend(self, cause: ClickEvent, state: UserState) -> None:
        assert self.recommender is not None
        began = time.perf_counter()
        ranked = await self.recommender.recommend(cause.user_id, state, cause)
        total_ms = (time.perf_counter() - began) * 1000
        now = datetime.now(timezone.utc)
        latency = StageLatency(
            candidates=round(ranked.stage_ms.get("candidates", 0.0), 3),
            features=round(ranked.stage_ms.get("features", 0.0), 3),
            scoring=round(ranked.stage_ms.get("scoring", 0.0), 3),
            total=round(total_ms, 3),
            event_to_emit=round((now - cause.ts).total_seconds() * 1000, 3),
        )
        message = Recommendation(
            user_id=cause.user_id, items=ranked.items, model_version=self.recommender.model_version,
            cause_event_id=cause.event_id, event_ts=cause.ts, emitted_at=now, latency_ms=latency,
            worker_id=self.settings.worker.id,
        )
        await self.recommendations.send(key=cause.user_id.encode(), value=message.to_bytes())
        for stage in ("candidates", "features", "scoring"):
            self.metrics.observe(stage, getattr(latency, stage))
        self.metrics.observe("recommend_total", total_ms)
        self.metrics.observe("event_to_emit", latency.event_to_emit or 0.0)
        self.metrics.count("recommendations")

    # -- item side -------------------------------------------------------------------
    async def on_item_message(self, raw: bytes) -> None:
        began = time.perf_counter()
        message = ItemMsg.model_validate_json(raw)
        stored = self.items.get(message.item_id)
        state = ItemState.from_dict(stored) if stored is not None else ItemState()
        result = apply_item_event(state, message, self.cfg)
        if isinstance(result, Skipped):
            self.metrics.count(f"item_skipped_{result.reason}")
            return
        self.items[message.item_id] = state.to_dict()
        assert self.writer is not None
        await self.writer.submit((result.row,))
        self.metrics.observe("item_update", (time.perf_counter() - began) * 1000)
        self.metrics.count("item_updates")

    # -- state -----------------------------------------------------------------------
    def _user_state(self, user_id: str) -> UserState:
        stored = self.users.get(user_id)
        return UserState.from_dict(stored) if stored is not None else UserState()

    def _shard(self, partition: int) -> GlobalShard:
        stored = self.shards.get(shard_id(partition))
        return GlobalShard.from_dict(stored) if stored is not None else GlobalShard()
