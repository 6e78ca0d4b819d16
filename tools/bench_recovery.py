"""``streamrec bench recovery``: how long a restarted worker takes to serve again, by state size.

For each ``--users`` count, on a fresh embedded stack: a features-role worker applies
``--updates`` view events for each of that many users (so the user table's changelog
holds updates × users records, and compaction has something to drop), is stopped with
SIGTERM, and a new worker starts in its place. The figure is the time from starting the
new process to its applying a fresh probe event: process start, rebuilding the tables
from their changelogs, and one event. The same is measured for the first worker on an
empty state, for comparison. Each run ends with the exactness check (the online
features against a recomputation from ``clickstream``). JSON: per user count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

ITEMS = 1000


async def _time_to_serve(settings: Any, store: Any, worker: subprocess.Popen[bytes], log: Path, began: float,
                         probe_user: str, timeout_s: float = 600) -> float:
    """Seconds from ``began`` until ``probe_user``'s probe event is in the online store."""
    from streamrec.features.messages import ClickEvent, EventType
    from streamrec.features.schema import USER_VIEW
    from streamrec.tools.harness import produce

    probe = ClickEvent(event_id=f"probe-{probe_user}", user_id=probe_user, item_id="probe", type=EventType.VIEW,
                       ts=datetime.now(timezone.utc))
    await produce(settings, [probe])
    while time.perf_counter() - began < timeout_s:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-3000:]}")
        if (await store.read_batch(USER_VIEW, [probe_user], ["event_count"]))[0]["event_count"]:
            return time.perf_counter() - began
        await asyncio.sleep(0.05)
    raise RuntimeError(f"worker did not serve within {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


def _events(users: int, updates: int) -> list[Any]:
    from streamrec.features.messages import ClickEvent, EventType

    start = datetime.now(timezone.utc)
    return [
        ClickEvent(event_id=f"rec-{k}-{u}", user_id=f"u{u}", item_id=f"i{u % ITEMS}", type=EventType.VIEW,
                   ts=start + timedelta(microseconds=k * users + u))
        for k in range(updates) for u in range(users)
    ]


async def _changelog_records(settings: Any, topic: str) -> int:
    from aiokafka import TopicPartition

    from streamrec.infra.kafka_clients import consumer

    reader = consumer(settings.broker)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.broker.partitions)]
        end = await reader.end_offsets(partitions)
        begin = await reader.beginning_offsets(partitions)
        return int(sum(end[tp] - begin[tp] for tp in partitions))
    finally:
        await reader.stop()


async def _one(settings: Any, users: int, updates: int, tmp: Path) -> dict[str, Any]:
    from streamrec.features.online import RedisFeatureStore
    from streamrec.features.schema import USER_VIEW
    from streamrec.features.verify import bench_check
    from streamrec.stream.topics import ensure_topics
    from streamrec.tools.harness import produce, start_worker, stop_worker

    await ensure_topics(settings)
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    first_log, second_log = tmp / "worker-1.log", tmp / "worker-2.log"
    began = time.perf_counter()
    worker = start_worker(settings, first_log)
    second = None
    try:
        empty_s = await _time_to_serve(settings, store, worker, first_log, began, "probe-empty")
        events = _events(users, updates)
        for start in tqdm(range(0, len(events), 10_000), desc=f"{users} users: produce", unit="10k ev"):
            await produce(settings, events[start:start + 10_000])
        last = [f"u{u}" for u in range(max(0, users - 50), users)]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            rows = await store.read_batch(USER_VIEW, last, ["event_count"])
            if all(int(r["event_count"] or 0) >= updates for r in rows):  # type: ignore[arg-type]
                break
            await asyncio.sleep(0.5)
        stop_worker(worker)
        w = settings.worker
        group = w.app_id if w.role == "all" else f"{w.app_id}-{w.role}"  # the consumer group (stream/app.py)
        changelog = f"{group}-user_state-changelog"
        records = await _changelog_records(settings, changelog)
        began = time.perf_counter()
        second = start_worker(settings, second_log)
        recovered_s = await _time_to_serve(settings, store, second, second_log, began, "probe-recovered")
        verified = await bench_check(settings)
    finally:
        for process in (worker, second):
            if process is not None:
                stop_worker(process)
        await store.close()
    return {"users": users, "updates_per_user": updates, "events": len(events),
            "user_changelog_records": records, "serve_after_start_empty_s": round(empty_s, 2),
            "serve_after_restart_s": round(recovered_s, 2), "verify": verified}


def run(user_counts: list[int], updates: int) -> dict[str, Any]:
    from streamrec.infra.stack import EmbeddedStack, StackConfig
    from streamrec.tools.harness import isolated_settings

    runs = []
    for users in user_counts:
        with tempfile.TemporaryDirectory(prefix="streamrec-recovery-") as tmp:
            stack = EmbeddedStack(StackConfig.on_free_ports(Path(tmp) / "stack"))
            try:
                stack.up()
                settings = isolated_settings(stack.config.bootstrap_servers, stack.config.redis_url,
                                             Path(tmp) / "worker", worker={"role": "features"})
                runs.append(asyncio.run(_one(settings, users, updates, Path(tmp))))
            finally:
                stack.down()
    return {"runs": runs}


def handle(args: argparse.Namespace) -> int:
    result = run(args.users, args.updates)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    ok = True
    for r in result["runs"]:
        ok = ok and bool(r["verify"].get("ok"))
        print(f"[recovery] {r['users']:>7} users × {r['updates_per_user']} updates: user changelog "
              f"{r['user_changelog_records']} records; serving {r['serve_after_restart_s']} s after a restart "
              f"(empty state: {r['serve_after_start_empty_s']} s); exact: {r['verify'].get('ok')}")
    print(f"[recovery] wrote {args.json}")
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls: adds ``streamrec bench recovery``."""
    p = bench_subparsers.add_parser("recovery", help="a restarted worker's time to serve again, by state size")
    p.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--updates", type=int, default=2, help="events per user (default 2)")
    p.add_argument("--json", type=Path, default=Path("var/bench/recovery.json"))
    p.set_defaults(func=handle)
