"""The ranking step's micro-benchmark (``python -m streamrec.tools.bench_ranking --bench``):
``RankingRecommender.recommend_many`` latency on a real store and model, batched against
per-request scoring; and the helpers that load a store from events the way the worker
would (tests and the Redis benchmark use them too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.features.batching import MicroBatchWriter
from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState, ItemUpdate, apply_item_event
from streamrec.features.messages import ClickEvent, EventType, ItemId, UserId
from streamrec.features.online import OnlineFeatureStore, RedisFeatureStore
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event
from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig
from streamrec.models.watcher import ModelWatcher
from streamrec.stream.ranking import RankingRecommender
from streamrec.stream.recommend import RecommendRequest
from streamrec.stream.settings import RecommendSettings


async def replay_events(store: OnlineFeatureStore, events: Sequence[ClickEvent], cfg: FeatureConfig) -> dict[UserId, UserState]:
    """Apply ``events`` with the worker's pure update functions (user side, then each
    item message) and write every row through the micro-batching writer, as the worker
    would. Returns each user's final state (what the worker's table would hold)."""
    users: dict[UserId, UserState] = {}
    items: dict[ItemId, ItemState] = {}
    writer = MicroBatchWriter(store, batch_size=1000, flush_ms=50.0)
    for event in events:
        update = apply_user_event(users.setdefault(event.user_id, UserState()), event, cfg)
        if not isinstance(update, UserUpdate):
            continue
        rows = [update.row]
        for msg in update.item_messages:
            result = apply_item_event(items.setdefault(msg.item_id, ItemState()), msg, cfg)
            if isinstance(result, ItemUpdate):
                rows.append(result.row)
        await writer.submit(rows)
    await writer.close()
    return users


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


class _Timings:
    """Per-batch latency, CPU and stage times of one recommender (see :func:`_timed`)."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.cpu: list[float] = []
        self.stages: dict[str, list[float]] = {"candidates": [], "features": [], "scoring": []}
        self.size = 1

    async def run(self, recommender: RankingRecommender, batch: list[RecommendRequest], gathered: bool) -> None:
        began, began_cpu = time.perf_counter(), time.process_time()
        if gathered:
            results = [r[0] for r in await asyncio.gather(*(recommender.recommend_many([q]) for q in batch))]
        else:
            results = await recommender.recommend_many(batch)
        self.latencies.append((time.perf_counter() - began) * 1000)
        self.cpu.append((time.process_time() - began_cpu) * 1000 / len(batch))
        self.size = len(batch)
        for stage, values in self.stages.items():
            values.append(results[0].stage_ms.get(stage, 0.0))

    def summary(self) -> dict[str, float]:
        out = {"p50_ms": _percentile(self.latencies, 50), "p99_ms": _percentile(self.latencies, 99),
               "batches": float(len(self.latencies)), "per_request_p50_ms": round(_percentile(self.latencies, 50) / self.size, 3),
               "cpu_per_request_p50_ms": _percentile(self.cpu, 50)}
        out.update({f"{stage}_p50_ms": _percentile(values, 50) for stage, values in self.stages.items()})
        return out


async def _timed(recommender: RankingRecommender, batches: list[list[RecommendRequest]], gathered: bool) -> dict[str, float]:
    """Latency per batch (ms): one ``recommend_many`` for the whole batch, or (``gathered``)
    one call per request, all concurrent. ``per_request_p50_ms`` is the median batch
    latency over the batch size; ``cpu_per_request_p50_ms`` the same for this process's
    CPU time (what bounds a worker's throughput; Redis runs in its own process)."""
    timings = _Timings()
    for batch in batches:
        await timings.run(recommender, batch, gathered)
    return timings.summary()


async def _timed_side_by_side(recommenders: dict[str, RankingRecommender], batches: list[list[RecommendRequest]]) -> dict[str, dict[str, float]]:
    """:func:`_timed` of several recommenders on the same batches, taken in turns (each
    batch by every recommender, the first to go rotating), so that what else the machine
    does weighs on all of them alike."""
    timings = {name: _Timings() for name in recommenders}
    names = list(recommenders)
    for n, batch in enumerate(batches):
        for name in names[n % len(names):] + names[: n % len(names)]:
            await timings[name].run(recommenders[name], batch, gathered=False)
    return {name: t.summary() for name, t in timings.items()}


def bench_events(frame: Any) -> list[ClickEvent]:
    """Rating events from an interaction frame (user_id, item_id, rating, ts in epoch s)."""
    return [ClickEvent(event_id=f"bench-{i}", user_id=str(row.user_id), item_id=str(row.item_id), type=EventType.RATING,
                       rating=float(row.rating), ts=datetime.fromtimestamp(int(row.ts), timezone.utc)) for i, row in enumerate(frame.itertuples(index=False))]


async def run_bench(redis_url: str, model_cfg: ModelConfig, events: int, iterations: int, seed: int = 0) -> dict[str, object]:
    """recommend_many latency for 1 and 32 requests of 200 candidates each on a real
    store (the last ``events`` MovieLens ratings replayed) and the promoted model
    (trained on MovieLens first if none is promoted). Imports torch: never in a worker."""
    from streamrec.models.datasets import load_dataset
    from streamrec.models.pipeline import ensure_default_model

    version = await asyncio.to_thread(ensure_default_model, model_cfg)
    feature_cfg = FeatureConfig(project=f"bench_ranking_{seed}")
    store = RedisFeatureStore.from_url(redis_url, feature_cfg)
    frame = load_dataset("movielens").interactions.sort_values("ts").tail(events)
    states = await replay_events(store, bench_events(frame), feature_cfg)
    cfg = CandidateConfig(max_candidates=200)
    watcher = ModelWatcher(model_cfg.model_copy(update={"poll_interval_s": 3600}), candidates=cfg)
    results: dict[str, object] = {"model_version": version, "events": events, "candidates": cfg.max_candidates}
    rng = np.random.default_rng(seed)
    requests = [RecommendRequest(u, s, ClickEvent(event_id=f"c-{u}", user_id=u, item_id=s.recent[0].item_id,
                                                  type=EventType.CLICK, ts=datetime.now(timezone.utc))) for u, s in states.items() if s.recent]
    # one call per batch, one score call per request, and one call per batch with the near cache
    # (the worker's default recommend.near_cache_ms) reusing the item reads of the batches before
    variants = {"one_call": (True, 0.0), "per_request_calls": (False, 0.0), "near_cache": (True, RecommendSettings().near_cache_ms)}
    recommenders = {name: RankingRecommender(store, watcher, cfg, top_k=10, batch_scoring=batch_scoring, near_cache_ms=near_cache_ms)
                    for name, (batch_scoring, near_cache_ms) in variants.items()}
    for recommender in recommenders.values():
        await recommender.start()
    results["provider"] = recommenders["one_call"].provider
    for size in (1, 32):
        batches = [[requests[i] for i in rng.choice(len(requests), size, replace=False)] for _ in range(iterations)]
        await _timed_side_by_side(recommenders, batches[:5])  # warm-up
        for name, summary in (await _timed_side_by_side(recommenders, batches)).items():
            results[f"batch{size}_{name}"] = summary
        if size > 1:
            results[f"concurrent{size}_separate_recommend_many"] = await _timed(recommenders["one_call"], batches, gathered=True)
    for recommender in recommenders.values():
        await recommender.close()
    await store.close()
    results["load_average_1m"] = os.getloadavg()[0]  # the machine is shared: read figures with it
    return results


def _private_redis() -> tuple[subprocess.Popen[bytes], str]:
    from streamrec.infra.stack import free_port

    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark RankingRecommender.recommend_many on a real store and model.")
    parser.add_argument("--bench", action="store_true", help="run the micro-benchmark")
    parser.add_argument("--redis-url", help="a Redis to use (default: start a private redis-server)")
    parser.add_argument("--registry", type=Path, default=ModelConfig().registry_dir, help="model registry dir")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("var/bench/ranking.json"))
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 2
    from streamrec.stream.runtime import limit_blas_threads
    from streamrec.stream.settings import load_settings

    limit_blas_threads(load_settings().worker.blas_threads)  # measured as the worker runs it
    process, url = (None, args.redis_url) if args.redis_url else _private_redis()
    try:
        result = asyncio.run(run_bench(url, ModelConfig(registry_dir=args.registry), args.events, args.iterations))
    finally:
        if process is not None:
            process.terminate()
            process.wait()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
