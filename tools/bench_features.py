"""``streamrec bench features``: update throughput, freshness and online reads, one run.

On a private embedded stack (Apache Kafka + redis-server on free loopback ports) with one
real worker process (``python -m streamrec.stream.cli worker``):

1. throughput: real MovieLens ratings produced as fast as possible; events/s from
   the first send until every user, global and item feature row reflects them;
2. freshness: events at a fixed rate; for each, the time from the send call until
   its user row's ``_ts`` in Redis reaches the event's time (polled every 2 ms; one
   event in ``rate/200`` is tracked, so polling stays light). When the worker's
   throughput is below the rate, a second run at 30% of that throughput shows the
   latency without a growing queue;
3. in-process update path (no broker, no Faust): the same events through the pure
   update functions and the micro-batching writer, to show what bounds (1);
4. reads, worker stopped: 1 user + 100 items, all features of both views, through
   the fast client and through Feast's ``get_online_features``, interleaved in the
   same loop, and whether the values are identical;
5. before the worker stops: ``streamrec verify`` (every user's and item's counts and
   means against a recomputation from ``clickstream``); the exit status is 1 when it
   fails.

The recommend step is switched off in the worker (``trigger_types=[]``): this
measures the feature layer, not ranking.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from streamrec.features.batching import MicroBatchWriter
from streamrec.features.config import FeatureConfig
from streamrec.features.history import feature_history
from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import ReadRequest, RedisFeatureStore
from streamrec.features.schema import GLOBAL_VIEW, ITEM_VIEW, USER_VIEW, VIEWS, epoch_ms
from streamrec.features.verify import bench_check
from streamrec.tools.harness import isolated_settings, produce, start_worker, stop_worker, wait_ready

POLL_S = 0.002
SAMPLES_PER_S = 200  # events tracked for freshness; polling all of them would load the 2 cores


@dataclass(frozen=True)
class BenchOptions:
    events: int
    rate: float
    duration_s: float
    reads: int
    json_path: Path
    plot_path: Path


def run_bench(options: BenchOptions) -> int:
    from streamrec.infra.stack import EmbeddedStack, StackConfig

    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        stack = EmbeddedStack(
            StackConfig.on_free_ports(Path(tmp) / "stack")
        )
        try:
            records = stack.up()
            settings = isolated_settings(stack.config.bootstrap_servers, stack.config.redis_url, Path(tmp) / "worker")
            result = asyncio.run(_measure(settings, options, Path(tmp)))
        finally:
            stack.down()
    result["stack"] = {r.name: {"started_in_s": round(r.started_in_s, 3)} for r in records}
    options.json_path.parent.mkdir(parents=True, exist_ok=True)
    options.json_path.write_text(json.dumps(result, indent=2))
    _print(result)
    return 0 if result["verify"]["ok"] else 1


async def _measure(settings: Any, options: BenchOptions, tmp: Path) -> dict[str, Any]:
    from streamrec.models.datasets import load_movielens

    ratings = load_movielens().interactions
    fresh_n = int(options.rate * options.duration_s) + 10
    needed = options.events + 2 * fresh_n
    rows = ratings.iloc[:needed]
    cfg: FeatureConfig = settings.features
    load_start = round(os.getloadavg()[0], 2)
    store = RedisFeatureStore.from_url(settings.redis.effective_url, cfg)
    worker = start_worker(settings, tmp / "worker.log")
    try:
        began = time.perf_counter()
        await wait_ready(settings, store, worker, tmp / "worker.log")
        ready_s = time.perf_counter() - began
        ledger = Ledger()
        throughput = await _throughput(settings, store, _events(rows.iloc[: options.events], "tp"), worker, ledger)
        fresh_events = _events(rows.iloc[options.events : options.events + fresh_n], "fr")
        freshness = await _freshness(settings, store, fresh_events, options.rate, options.duration_s, ledger)
        freshness["freshness_backlog_drain_s"] = round(await ledger.drain(store, worker), 2)
        samples = {f"{options.rate:.0f} ev/s": freshness.pop("samples_ms")}
        sustainable = throughput["update_events_per_s"] * 0.3
        if sustainable < options.rate:
            # the requested rate overloads the worker: also show freshness where it keeps up
            extra = await _freshness(settings, store, _events(rows.iloc[options.events + fresh_n :], "fs"),
                                     sustainable, options.duration_s, ledger)
            await ledger.drain(store, worker)
            samples[f"{sustainable:.0f} ev/s"] = extra.pop("samples_ms")
            freshness.update({k.replace("freshness_", "freshness_sustainable_"): v for k, v in extra.items()})
        worker_rss_mb = _rss_mb(worker.pid)
        verified = await bench_check(settings)  # the online features against clickstream
    finally:
        stop_worker(worker)
    inprocess = await _inprocess(settings.redis.effective_url, cfg, _events(rows.iloc[: options.events], "ip"))
    reads = await _reads(settings, store, rows.iloc[: options.events], options.reads)
    await store.close()
    _plot(samples, options.plot_path)
    return {
        **throughput,
        **freshness,
        **reads,
        **inprocess,
        "verify": verified,
        "load_avg_1m": {"start": load_start, "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "worker_ready_s": round(ready_s, 2),
        "worker_rss_mb": worker_rss_mb,
        "settings": {
            "fetch_max_wait_ms": settings.broker.fetch_max_wait_ms,
            "partitions": settings.broker.partitions,
            "batch_size": cfg.batch_size,
            "flush_ms": cfg.flush_ms,
            "covisit_window_items": cfg.covisit_window_items,
            "recommend_trigger_types": settings.recommend.trigger_types,
        },
        "plot": str(options.plot_path),
    }


def _events(frame: Any, tag: str) -> list[ClickEvent]:
    """Real MovieLens ratings with fresh ids; timestamps are set when sent."""
    return [
        ClickEvent(
            event_id=f"bench-{tag}-{row.Index}",
            user_id=str(row.user_id),
            item_id=str(row.item_id),
            type=EventType.RATING,
            rating=float(row.rating),
            ts=datetime.now(timezone.utc),
        )
        for row in frame.itertuples(index=True)
    ]


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:
        return None


class Ledger:
    """Ratings sent per item, to tell when the item side has applied all of them."""

    def __init__(self) -> None:
        self.expected: dict[str, int] = defaultdict(int)

    def add(self, events: list[ClickEvent]) -> None:
        for event in events:
            self.expected[event.item_id] += 1  # type: ignore[index]

    async def caught_up(self, store: RedisFeatureStore) -> bool:
        items = list(self.expected)
        rows = await store.read_batch(ITEM_VIEW, items, ["n_rating"])
        return all(int(r["n_rating"] or 0) >= self.expected[i] for i, r in zip(items, rows))  # type: ignore[arg-type]

    async def drain(self, store: RedisFeatureStore, worker: subprocess.Popen[bytes], timeout_s: float = 600) -> float:
        """Wait until the worker has applied everything sent; returns the seconds waited."""
        began = time.perf_counter()
        while not await self.caught_up(store):
            if worker.poll() is not None or time.perf_counter() - began > timeout_s:
                raise RuntimeError("the worker did not catch up")
            await asyncio.sleep(0.1)
        return time.perf_counter() - began


# -- 1. throughput ----------------------------------------------------------------------
async def _throughput(
    settings: Any, store: RedisFeatureStore, events: list[ClickEvent], worker: subprocess.Popen[bytes], ledger: Ledger
) -> dict[str, Any]:
    shards = [f"p{p}" for p in range(settings.broker.partitions)]
    base = await _global_events(store, shards)
    ledger.add(events)
    began = time.perf_counter()
    await produce(settings, events)
    produced_s = time.perf_counter() - began
    user_done = items_done = None
    bar = tqdm(total=len(events), desc="throughput (user side)", unit="ev")
    deadline = time.perf_counter() + 900
    while items_done is None:
        if worker.poll() is not None:
            raise RuntimeError("worker exited during the throughput run")
        if time.perf_counter() > deadline:
            raise RuntimeError("the worker did not apply every event within 15 minutes")
        seen = await _global_events(store, shards) - base
        bar.update(seen - bar.n)
        if user_done is None and seen >= len(events):
            user_done = time.perf_counter() - began
        if user_done is not None and await ledger.caught_up(store):
            items_done = time.perf_counter() - began
        await asyncio.sleep(0.05)
    bar.close()
    return {
        "update_events_per_s": round(len(events) / items_done, 1),
        "update_user_side_events_per_s": round(len(events) / user_done, 1),  # type: ignore[operator]
        "update_events": len(events),
        "produce_events_per_s": round(len(events) / produced_s, 1),
    }


async def _global_events(store: RedisFeatureStore, shards: list[str]) -> int:
    rows = await store.read_batch(GLOBAL_VIEW, shards, ["event_count"])
    return sum(int(r["event_count"] or 0) for r in rows)  # type: ignore[arg-type, misc]


# -- 2. freshness -----------------------------------------------------------------------
async def _freshness(
    settings: Any, store: RedisFeatureStore, events: list[ClickEvent], rate: float, duration_s: float, ledger: Ledger
) -> dict[str, Any]:
    from streamrec.infra.kafka_clients import producer

    pending: dict[str, list[tuple[int, float]]] = defaultdict(list)  # user → (event ts ms, sent at)
    samples: list[float] = []
    client = producer(settings.broker, linger_ms=0)
    await client.start()
    sending = True

    async def poll() -> None:
        while sending or pending:
            users = list(pending)
            if users:
                stamps = await store.read_row_timestamps(USER_VIEW, users)
                now = time.perf_counter()
                for user, ts in zip(users, stamps):
                    if ts is None:
                        continue
                    waiting = pending[user]
                    done = [sent for ev_ts, sent in waiting if ev_ts <= ts]
                    samples.extend((now - sent) * 1000 for sent in done)
                    pending[user] = [(e, s) for e, s in waiting if e > ts]
                    if not pending[user]:
                        del pending[user]
            await asyncio.sleep(max(POLL_S, len(pending) * 2e-5))  # back off when many are pending

    every = max(1, round(rate / SAMPLES_PER_S))
    poller = asyncio.create_task(poll())
    began = time.perf_counter()
    sent = 0
    try:
        for event in tqdm(events, desc=f"freshness at {rate:.0f} ev/s", unit="ev"):
            delay = began + sent / rate - time.perf_counter()
            if delay > 0.005:
                await asyncio.sleep(delay)
            if time.perf_counter() - began >= duration_s:
                break
            event = event.model_copy(update={"ts": datetime.now(timezone.utc)})
            if sent % every == 0:
                pending[event.user_id].append((epoch_ms(event.ts), time.perf_counter()))
            ledger.add([event])
            await client.send(settings.topics.clickstream, event.to_bytes(), key=event.user_id.encode())
            sent += 1
        await client.flush()
        achieved = sent / (time.perf_counter() - began)
        sending = False
        await asyncio.wait_for(poller, timeout=120)
    finally:
        sending = False
        await client.stop()
    return {
        "freshness_p50_ms": _pct(samples, 50),
        "freshness_p95_ms": _pct(samples, 95),
        "freshness_p99_ms": _pct(samples, 99),
        "freshness_max_ms": round(max(samples), 2),
        "freshness_events": len(samples),
        "freshness_rate_target": round(rate, 1),
        "freshness_rate_achieved": round(achieved, 1),
        "freshness_poll_ms": POLL_S * 1000,
        "freshness_sampled_every": every,
        "samples_ms": samples,
    }


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))], 2)


# -- 3. in-process update path ---------------------------------------------------------
async def _inprocess(redis_url: str, cfg: FeatureConfig, events: list[ClickEvent]) -> dict[str, Any]:
    """Pure updates + batched Redis writes, no broker: the feature layer's own cost."""
    local = cfg.model_copy(update={"project": "bench_inprocess"})
    store = RedisFeatureStore.from_url(redis_url, local)
    writer = MicroBatchWriter(store, batch_size=local.batch_size, flush_ms=local.flush_ms)
    began = time.perf_counter()
    rows = 0
    pending = []
    for row in feature_history(events, local):
        pending.append(row)
        if len(pending) >= 64:
            await writer.submit(pending)
            rows += len(pending)
            pending = []
    await writer.submit(pending)
    await writer.close()
    elapsed = time.perf_counter() - began
    await store.close()
    return {
        "inprocess_update_events_per_s": round(len(events) / elapsed, 1),
        "inprocess_rows_per_event": round((rows + len(pending)) / len(events), 2),
    }


# -- 4. reads ---------------------------------------------------------------------------
async def _reads(settings: Any, store: RedisFeatureStore, rows: Any, reads: int) -> dict[str, Any]:
    from streamrec.features.repo import feature_refs, feature_store
    from streamrec.stream.runtime import feature_repo_dir

    repo = next(feature_repo_dir(settings).glob("**/feature_store.yaml")).parent
    feast = feature_store(repo)
    user = str(rows["user_id"].value_counts().index[0])  # rows: the events sent in the throughput run
    popular = [str(i) for i in rows["item_id"].value_counts().index[:300]]
    written = await store.read_batch(ITEM_VIEW, popular, ["event_count"])
    items = [i for i, r in zip(popular, written) if r["event_count"] is not None][:100]
    refs = feature_refs(USER_VIEW) + feature_refs(ITEM_VIEW)
    entity_rows = [{"user_id": user, "item_id": item} for item in items]
    requests = [ReadRequest(USER_VIEW, [user]), ReadRequest(ITEM_VIEW, items)]
    fast_ms, feast_ms = [], []
    fast = feast_response = None
    for _ in tqdm(range(reads), desc="reads: fast vs Feast", unit="read"):
        t0 = time.perf_counter()
        fast = await store.read_many(requests)
        t1 = time.perf_counter()
        feast_response = feast.get_online_features(features=refs, entity_rows=entity_rows, full_feature_names=True).to_dict()
        t2 = time.perf_counter()
        fast_ms.append((t1 - t0) * 1000)
        feast_ms.append((t2 - t1) * 1000)
    mismatches = _mismatches(fast, feast_response, items)  # type: ignore[arg-type]
    fast_p50, feast_p50 = statistics.median(fast_ms), statistics.median(feast_ms)
    return {
        "read_fast_p50_ms": round(fast_p50, 3),
        "read_fast_p99_ms": _pct(fast_ms, 99),
        "read_feast_p50_ms": round(feast_p50, 3),
        "read_feast_p99_ms": _pct(feast_ms, 99),
        "read_speedup": round(feast_p50 / fast_p50, 2),
        "read_entities": {"users": 1, "items": len(items), "features": len(refs)},
        "values_identical": not mismatches,
        "value_mismatches": mismatches[:20],
    }


def _mismatches(fast: list[list[dict[str, Any]]], feast: dict[str, list[Any]], items: list[str]) -> list[str]:
    """Every (entity, feature) where the two readers disagree, or that has no value."""
    users, item_rows = fast
    out = []
    for name in VIEWS[USER_VIEW].feature_names:
        if users[0][name] is None or users[0][name] != feast[f"{USER_VIEW}__{name}"][0]:
            out.append(f"user {name}: fast={users[0][name]!r} feast={feast[f'{USER_VIEW}__{name}'][0]!r}")
    for k, item in enumerate(items):
        for name in VIEWS[ITEM_VIEW].feature_names:
            ours, theirs = item_rows[k][name], feast[f"{ITEM_VIEW}__{name}"][k]
            if ours is None or ours != theirs:
                out.append(f"item {item} {name}: fast={ours!r} feast={theirs!r}")
    return out


# -- output -----------------------------------------------------------------------------
def _plot(runs: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    for label, samples in runs.items():
        hist.hist(samples, bins=60, alpha=0.6, label=label)
        ordered = sorted(samples)
        cdf.plot(ordered, [k / len(ordered) for k in range(len(ordered))], label=label)
    hist.set(xlabel="event produced → readable in Redis (ms)", ylabel="events", title="freshness, one worker")
    cdf.set(xlabel="ms", ylabel="fraction of events", title="CDF", xscale="log")
    cdf.grid(True, which="both", alpha=0.3)
    hist.legend()
    cdf.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print(result: dict[str, Any]) -> None:
    keys = [
        "update_events_per_s", "update_user_side_events_per_s", "inprocess_update_events_per_s",
        "freshness_p50_ms", "freshness_p95_ms", "freshness_p99_ms", "freshness_rate_achieved",
        "freshness_sustainable_rate_target", "freshness_sustainable_p50_ms", "freshness_sustainable_p99_ms",
        "read_fast_p50_ms", "read_feast_p50_ms", "read_speedup", "values_identical", "load_avg_1m",
    ]
    width = max(len(k) for k in keys)
    for key in keys:
        print(f"{key:<{width}}  {result.get(key)}")
