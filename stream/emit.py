"""Emit, the pipeline's last stage: ranked lists out on ``recommendations``, then into the
per-user list cache (stream/rec_cache.py), each with the time spent in every stage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Protocol

from streamrec.features.messages import Recommendation, StageLatency
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.ports import Sink
from streamrec.stream.rec_cache import UserVersion
from streamrec.stream.recommend import Ranked, RecommendRequest
from streamrec.stream.user_side import user_version


class ListCache(Protocol):
    """What emitting needs of the list cache (stream/rec_cache.py's ``RecommendationCache``)."""

    async def update(self, lists: Sequence[tuple[str, UserVersion, bytes]],
                     stale: Mapping[str, UserVersion] | None = None) -> None: ...


class Emitter:
    """Sends one ``Recommendation`` per ranked request, keyed by user; ``cache`` None: no cache.
    Observes ``event_to_emit`` per list."""

    def __init__(self, sink: Sink, cache: ListCache | None, metrics: WorkerMetrics, *, worker_id: str) -> None:
        self.sink, self.cache, self.metrics, self.worker_id = sink, cache, metrics, worker_id

    async def emit(self, requests: Sequence[RecommendRequest], ranked: Sequence[Ranked], *, model_version: str,
                   total_ms: float, rank_began: float, batch_began: float | None = None,
                   stale: Mapping[str, UserVersion] | None = None) -> None:
        """Send each list, then cache them all and drop the ``stale`` users' older entries.
        ``total_ms``: ranking time per request; ``rank_began`` and ``batch_began`` (epoch s):
        when ranking and these events' batch began (None for a list the debounce released)."""
        now = datetime.now(timezone.utc)
        emitted: list[tuple[str, UserVersion, bytes]] = []
        for request, result in zip(requests, ranked):
            cause = request.cause
            latency = StageLatency(
                candidates=round(result.stage_ms.get("candidates", 0.0), 3),
                features=round(result.stage_ms.get("features", 0.0), 3),
                scoring=round(result.stage_ms.get("scoring", 0.0), 3),
                total=round(total_ms, 3),
                event_to_emit=round((now - cause.ts).total_seconds() * 1000, 3),
                ingest=None if batch_began is None else round((batch_began - cause.ts.timestamp()) * 1000, 3),
                update=None if batch_began is None else round((rank_began - batch_began) * 1000, 3),
            )
            message = Recommendation(
                user_id=cause.user_id, items=result.items, model_version=model_version, cause_event_id=cause.event_id,
                event_ts=cause.ts, emitted_at=now, latency_ms=latency, worker_id=self.worker_id,
                covers=list(request.covers),
            )
            payload = message.to_bytes()
            await self.sink.send(key=cause.user_id.encode(), value=payload)
            emitted.append((cause.user_id, user_version(request.state), payload))
            self.metrics.observe("event_to_emit", latency.event_to_emit or 0.0)
        if self.cache is not None:
            await self.cache.update(emitted, stale)

    async def invalidate(self, stale: Mapping[str, UserVersion]) -> None:
        """Drop these users' cached lists older than their versions: new events are being ranked."""
        if self.cache is not None and stale:
            await self.cache.update([], stale)
