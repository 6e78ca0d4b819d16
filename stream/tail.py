"""Print messages from ``recommendations``, ``metrics`` or the DLQ as they arrive."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

from pydantic import ValidationError

from streamrec.features.messages import DeadLetter, MetricsSnapshot, Recommendation
from streamrec.infra.kafka_clients import consumer
from streamrec.stream.settings import Settings


def format_recommendation(raw: bytes) -> str:
    rec = Recommendation.model_validate_json(raw)
    items = ", ".join(f"{i.item_id}({i.score:.2f},{i.source})" for i in rec.items[:5])
    more = f" +{len(rec.items) - 5}" if len(rec.items) > 5 else ""
    lat = rec.latency_ms
    e2e = f" event→emit {lat.event_to_emit:.1f} ms" if lat.event_to_emit is not None else ""
    return f"user {rec.user_id} ← [{items}{more}] model {rec.model_version} total {lat.total:.2f} ms{e2e}"


def format_metrics(raw: bytes) -> str:
    snap = MetricsSnapshot.model_validate_json(raw)
    stages = " ".join(f"{name} p50/p99 {p.p50:.2f}/{p.p99:.2f}" for name, p in snap.latency_ms.items()
                      if name in ("recommend_total", "event_to_emit", "user_update"))
    counts = " ".join(f"{k}={v}" for k, v in sorted(snap.counts.items()))
    return f"[{snap.worker_id}] {snap.events_per_s:.0f} ev/s {counts} dlq={snap.dlq_count} | {stages} ms | model {snap.model_version} on {snap.provider}"


def format_dead_letter(raw: bytes) -> str:
    letter = DeadLetter.model_validate_json(raw)
    return f"{letter.reason} field={letter.field} detail={letter.detail!r} payload={letter.payload[:80]!r}"


async def tail(
    settings: Settings,
    what: str,
    *,
    raw: bool = False,
    from_beginning: bool = False,
    max_messages: int | None = None,
    duration_s: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print messages until ``max_messages`` or ``duration_s``; returns how many were printed."""
    topic, fmt = _topic_and_format(settings, what)
    client = consumer(settings.broker, topic, auto_offset_reset="earliest" if from_beginning else "latest")
    await client.start()
    printed = 0
    deadline = time.monotonic() + duration_s if duration_s else None
    try:
        while max_messages is None or printed < max_messages:
            timeout = 1000 if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
            if deadline is not None and time.monotonic() >= deadline:
                break
            batch = await client.getmany(timeout_ms=min(timeout, 1000))
            for records in batch.values():
                for record in records:
                    print(_render(record.value, fmt, raw), file=out, flush=True)
                    printed += 1
    finally:
        await client.stop()
    return printed


def _topic_and_format(settings: Settings, what: str) -> tuple[str, Callable[[bytes], str]]:
    table = {
        "recommendations": (settings.topics.recommendations, format_recommendation),
        "metrics": (settings.topics.metrics, format_metrics),
        "dlq": (settings.topics.dlq, format_dead_letter),
    }
    if what not in table:
        raise ValueError(f"can tail {', '.join(table)}; not {what!r}")
    return table[what]


def _render(value: bytes, fmt: Callable[[bytes], str], raw: bool) -> str:
    if raw:
        return json.dumps(json.loads(value))
    try:
        return fmt(value)
    except (ValidationError, ValueError):
        return value.decode("utf-8", errors="replace")


def run(settings: Settings, what: str, **kwargs: object) -> int:
    return asyncio.run(tail(settings, what, **kwargs))  # type: ignore[arg-type]
