"""One Kafka consumer, any number of browsers: the gateway's fan-out.

The :class:`Hub` reads ``recommendations`` and ``metrics`` with one consumer (its own
consumer group, from the latest offsets) and hands each message to the live streams
that want it: a recommendation to the streams of its user (found by the record's key,
no JSON parsing on the way), a metrics snapshot to every monitoring stream. Each
message becomes one Server-Sent Events frame, built once and shared by all its
receivers.

Handing over never waits: each stream (:class:`Subscriber`) has a bounded buffer,
and a stream whose buffer is full has fallen behind by that many messages; it is
dropped (its connection is aborted) and the consumer goes on. A browser's
EventSource reconnects by itself and the page reloads the cached list, so dropping
costs the slow browser a reconnect and nobody else anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from streamrec.infra.kafka_clients import consumer
from streamrec.stream.gateway import sse
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)

USER = "user"
METRICS = "metrics"


class Subscriber:
    """One live stream: frames wait in a bounded buffer until its connection sends them."""

    __slots__ = ("kind", "user_id", "limit", "_frames", "_wake", "dropped", "closed", "on_drop")

    def __init__(self, kind: str, user_id: str | None, limit: int) -> None:
        self.kind = kind
        self.user_id = user_id
        self.limit = limit
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.dropped = False
        self.closed = False
        self.on_drop: Callable[[], None] | None = None  # set by the connection: aborts it

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame``; False (and the stream is dropped) when the buffer is full. Never waits."""
        if self.closed:
            return False
        if len(self._frames) >= self.limit:
            self.drop()
            return False
        self._frames.append(frame)
        self._wake.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self.close()
        if self.on_drop is not None:
            self.on_drop()

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self._wake.set()

    async def take(self, timeout_s: float) -> list[bytes] | None:
        """Every queued frame (waiting up to ``timeout_s`` for one: ``[]`` then); None once closed."""
        if not self._frames and not self.closed:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
        if self.closed:
            return None
        frames = list(self._frames)
        self._frames.clear()
        return frames


class Hub:
    """Fan-out of ``recommendations`` (per user) and ``metrics`` (to every monitoring page)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        g = settings.gateway
        self._recommendations = settings.topics.recommendations
        self._metrics = settings.topics.metrics
        self._by_user: dict[str, set[Subscriber]] = {}
        self._monitors: set[Subscriber] = set()
        self._history: deque[bytes] = deque(maxlen=g.history)
        self._own_history: deque[bytes] = deque(maxlen=g.history)  # the gateway's own figures
        self.counts: Counter[str] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_message_at: float | None = None

    # -- streams -------------------------------------------------------------------
    @property
    def clients(self) -> int:
        return len(self._monitors) + sum(len(s) for s in self._by_user.values())

    def subscribe_user(self, user_id: str) -> Subscriber:
        sub = Subscriber(USER, user_id, self.settings.gateway.client_buffer)
        self._by_user.setdefault(user_id, set()).add(sub)
        self.counts["streams_opened"] += 1
        return sub

    def subscribe_metrics(self) -> Subscriber:
        """A monitoring stream, starting with the recent snapshots and figures (up to ``gateway.history`` each)."""
        recent = [*self._history, *self._own_history]
        sub = Subscriber(METRICS, None, self.settings.gateway.client_buffer + len(recent))
        for message in recent:
            sub.offer(message)
        self._monitors.add(sub)
        self.counts["streams_opened"] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.close()
        if sub.kind == METRICS:
            self._monitors.discard(sub)
        elif sub.user_id is not None:
            subs = self._by_user.get(sub.user_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_user[sub.user_id]

    # -- fan-out -------------------------------------------------------------------
    def dispatch(self, topic: str, key: bytes | None, value: bytes) -> int:
        """Hand one consumed message to the streams that want it; returns how many got it. Never waits."""
        self.last_message_at = time.time()
        if topic == self._recommendations:
            self.counts["recommendations_in"] += 1
            user_id = key.decode("utf-8", "replace") if key is not None else _user_of(value)
            subs = self._by_user.get(user_id) if user_id is not None else None
            if not subs:
                return 0
            return self._offer(sse.frame("recommendation", value), list(subs))
        if topic == self._metrics:
            self.counts["metrics_in"] += 1
            message = sse.frame("metrics", value)
            self._history.append(message)
            return self._offer(message, list(self._monitors))
        return 0

    def broadcast_monitors(self, event: str, data: bytes) -> int:
        """A message of the gateway's own to every monitoring stream (and to later ones, from the history)."""
        message = sse.frame(event, data)
        self._own_history.append(message)
        return self._offer(message, list(self._monitors))

    def _offer(self, frame: bytes, subs: list[Subscriber]) -> int:
        delivered = 0
        for sub in subs:
            if sub.offer(frame):
                delivered += 1
            else:
                self.counts["streams_dropped"] += 1
                log.warning("dropped a %s stream%s: %d messages behind", sub.kind,
                            f" of user {sub.user_id}" if sub.user_id else "", sub.limit)
                self.unsubscribe(sub)
        self.counts["frames_out"] += delivered
        return delivered

    # -- the consumer --------------------------------------------------------------
    async def start(self) -> None:
        """Start the consumer (a fresh group member from the latest offsets) and the loop that reads it."""
        self._consumer = consumer(
            self.settings.broker, self._recommendations, self._metrics,
            group_id=self.settings.gateway.group_id, auto_offset_reset="latest", enable_auto_commit=False,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="gateway-hub")

    @property
    def assigned(self) -> int:
        """Partitions this gateway reads now (0 until its group has assigned them)."""
        return len(self._consumer.assignment()) if self._consumer is not None else 0

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker hiccup: aiokafka reconnects; keep reading
                log.exception("reading from the broker failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                for record in records:
                    self.dispatch(tp.topic, record.key, record.value)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        for sub in [*self._monitors, *(s for subs in self._by_user.values() for s in subs)]:
            self.unsubscribe(sub)

    def stats(self) -> dict[str, Any]:
        return {"clients": self.clients, "user_streams": sum(len(s) for s in self._by_user.values()),
                "monitor_streams": len(self._monitors), "assigned_partitions": self.assigned, **self.counts}


def _user_of(value: bytes) -> str | None:
    # only for a record without a key (the worker always keys lists by user)
    try:
        user = json.loads(value).get("user_id")
    except (ValueError, AttributeError):
        return None
    return str(user) if user is not None else None
