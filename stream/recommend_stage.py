"""Recommend, the pipeline's fourth stage: a batch's requests to rank, ranked here or
handed over.

Where ranking happens (roles ``all`` and ``recommend``) a :class:`RecommendStage` keeps
one request per user (the last, covering the user's earlier ones: stream/recommend.py
``coalesce``), holds what the debounce holds, ranks the rest with the
:class:`~streamrec.stream.recommend.Recommender` and emits the lists (stream/emit.py).
The ``features`` role hands each user's last request to the ``recommend`` role instead
(:class:`HandOver`, the ``to_recommend`` topic, features/messages.py ``RecommendTask``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from streamrec.features.messages import RecommendTask
from streamrec.features.user_state import UserState
from streamrec.stream.debounce import Debouncer
from streamrec.stream.emit import Emitter
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.ports import RawMessage, Sink
from streamrec.stream.rec_cache import UserVersion
from streamrec.stream.recommend import RecommendRequest, Recommender, coalesce


class RecommendStage:
    """Coalesce, debounce, rank, emit. Counts ``coalesced``, ``debounced``, ``recommendations``
    and ``scoring_errors``; observes each ranking stage and ``recommend_total`` (ms)."""

    def __init__(self, recommender: Recommender, debouncer: Debouncer[RecommendRequest], emitter: Emitter,
                 metrics: WorkerMetrics) -> None:
        self.recommender, self.debouncer, self.emitter, self.metrics = recommender, debouncer, emitter, metrics

    async def offer(self, requests: Sequence[RecommendRequest], stale: Mapping[str, UserVersion] | None = None,
                    batch_began: float | None = None) -> None:
        """Rank one list per user, minus what the debounce holds; a held request covers the
        one it replaces. ``stale``: the batch's users' versions, whose cached lists are
        replaced by their new ones or dropped; ``batch_began`` (epoch s): see :meth:`rank`."""
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
            await self.rank(ready, stale, batch_began)
        elif stale:
            await self.emitter.invalidate(stale)

    async def release_due(self) -> None:
        """Rank the held requests whose debounce window has ended (called by a timer)."""
        due = self.debouncer.due(time.monotonic())
        if due:
            await self.rank(due)

    async def rank(self, requests: list[RecommendRequest], stale: Mapping[str, UserVersion] | None = None,
                   batch_began: float | None = None) -> None:
        """Rank and emit each request's list. ``batch_began`` (epoch s): when these events'
        batch began, to time the stages before ranking."""
        began, began_wall = time.perf_counter(), time.time()
        ranked = await self.recommender.recommend_many(requests)
        per_request_ms = (time.perf_counter() - began) * 1000
        self._count_scoring_errors()
        await self.emitter.emit(requests, ranked, model_version=self.recommender.model_version, total_ms=per_request_ms,
                                rank_began=began_wall, batch_began=batch_began, stale=stale)
        for stage in ("candidates", "features", "scoring"):
            self.metrics.observe(stage, ranked[0].stage_ms.get(stage, 0.0) if ranked else 0.0)
        self.metrics.observe("recommend_total", per_request_ms)
        self.metrics.count("recommendations", len(requests))

    def _count_scoring_errors(self) -> None:
        """Mirror the recommender's cumulative model failures in the ``scoring_errors`` counter."""
        new = self.recommender.scoring_errors - self.metrics.total_counts["scoring_errors"]
        if new > 0:
            self.metrics.count("scoring_errors", new)


class HandOver:
    """The features role's end of ``to_recommend``: one task per user (the batch's last
    event, covering the earlier ones: every request of a user in a batch carries the same
    state). Counts ``coalesced`` and ``handed_over``."""

    def __init__(self, sink: Sink, metrics: WorkerMetrics) -> None:
        self.sink, self.metrics = sink, metrics

    async def send(self, requests: Sequence[RecommendRequest]) -> None:
        now = time.time()
        latest = coalesce(requests)
        for r in latest:
            task = RecommendTask(cause=r.cause, state=r.state.to_dict(), enqueued_at=now, covers=list(r.covers))
            await self.sink.send(key=r.user_id.encode(), value=task.model_dump_json().encode())
        self.metrics.count("coalesced", len(requests) - len(latest))
        self.metrics.count("handed_over", len(latest))


def received_tasks(batch: Sequence[RawMessage], metrics: WorkerMetrics) -> list[RecommendRequest]:
    """The recommend role's end of ``to_recommend``: the tasks' requests; observes each
    task's ``handover`` time (ms, enqueued to received)."""
    tasks = [RecommendTask.model_validate_json(m.value) for m in batch]
    now = time.time()
    for task in tasks:
        metrics.observe("handover", (now - task.enqueued_at) * 1000)
    return [RecommendRequest(t.cause.user_id, UserState.from_dict(t.state), t.cause, tuple(t.covers)) for t in tasks]
