"""Replay a real data set into ``clickstream`` in event-time order at a fixed rate.

Each row becomes a ``ClickEvent`` with a deterministic ``event_id``
(``<dataset>-<row>``), so replaying the same rows twice is harmless downstream.
By default ``ts`` is the send time (the data set's order is kept, its gaps are not),
so live features such as recency and decay behave as they would in production;
``original_time=True`` keeps the data set's own timestamps.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pandas as pd
from tqdm import tqdm

from streamrec.infra.kafka_clients import producer
from streamrec.models.datasets import events_from
from streamrec.stream.settings import Settings
from streamrec.stream.topics import ensure_topics

TICK_S = 0.01  # pacing granularity: events are sent in small bursts every 10 ms


async def replay(
    settings: Settings,
    frame: pd.DataFrame,
    dataset: str,
    *,
    rate: float,
    limit: int | None = None,
    duration_s: float | None = None,
    original_time: bool = False,
    progress: bool = True,
    run: str = "",
) -> int:
    """Send rows at ``rate`` events/s; stops after ``limit`` events or ``duration_s``. Returns the count sent.
    ``run`` marks the event ids of this replay (see ``events_from``)."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    rows = frame if limit is None else frame.iloc[:limit]
    await ensure_topics(settings)
    client = producer(settings.broker)
    await client.start()
    sent = 0
    started = time.monotonic()
    bar = tqdm(total=len(rows), unit="ev", desc=f"replay {dataset}", disable=not progress, smoothing=0.05)
    try:
        for event in events_from(rows, dataset, run):
            delay = started + sent / rate - time.monotonic()
            if delay > TICK_S:
                await asyncio.sleep(delay)
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            if not original_time:
                event = event.model_copy(update={"ts": datetime.now(timezone.utc)})
            await client.send(settings.topics.clickstream, event.to_bytes(), key=event.user_id.encode())
            sent += 1
            bar.update(1)
        await client.flush()
    finally:
        bar.close()
        await client.stop()
    return sent
