"""``streamrec bench redis``: features/resp.py against redis-py's own pipeline, side by side.

The worker sends every Redis batch through ``features/resp.py`` (commands packed from
prepacked pieces, replies read straight from the hiredis reader). This measures that
against redis-py's public API for the same job, ``client.pipeline(transaction=False)``
with one ``execute_command`` per command (redis-py parses with hiredis when it is
installed, as it is here), on the operations the worker does with it, with the same
commands and the same data:

* ``write``: one micro-batch of ``batch_size`` feature rows (HSET of the whole row, plus
  the index commands of features/indexes.py), rows made by replaying MovieLens ratings
  through the worker's update functions (``RedisFeatureStore.write_batch``);
* ``read 1x200`` / ``read 32x6400``: the ranker's columns of 1 user and 200 candidates, and
  of 32 users and 200 candidates each (``RedisFeatureStore.read_many``);
* ``read all 1x100``: every feature of 1 user and 100 items (``bench features``' read);
* ``candidates 32``: the covisit fields of 32 users' recent items, the popularity index
  and the 32 seen sets (``RedisFeatureStore.candidate_inputs``);
* ``cache 32``: 32 conditional list writes (``RedisFeatureStore.write_lists``).

A private redis-server on a free loopback port, started here and stopped by PID at the
end. Both ways run in this one process, interleaved operation by operation, so a busy
machine slows both alike; figures are medians (and p90) over ``--repeats`` rounds, of the
wall time and of this process's CPU time (Redis's own time is the same for both). Before
timing, each operation's replies are checked equal both ways, and a batch written each
way into its own project reads back the same. JSON: per operation, both ways' figures
and ``speedup`` (pipeline median ÷ resp median: above 1, resp.py is faster).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from tqdm import tqdm

from streamrec.features import codec
from streamrec.features.config import FeatureConfig
from streamrec.features.indexes import IndexKeys, index_args
from streamrec.features.list_cache import ListCacheKeys, ListWrite
from streamrec.features.online import COVISIT_FIELDS, CandidateInputs, ReadRequest, RedisFeatureStore, decode_candidate_inputs
from streamrec.features.redis_conn import redis_client
from streamrec.features.schema import ITEM_KEY, ITEM_VIEW, USER_VIEW, VIEWS, FeatureRow
from streamrec.tools.bench_ranking import bench_events, replay_events

Operation = Callable[[], Awaitable[Any]]
CACHE_TTL_S = 3600
RANKER_COLUMNS = ("rating_mean", "n_rating")  # per view: what the default ranker reads (models/features.py)


class PipelineClient:
    """The worker's Redis operations on redis-py's public pipeline API: the same commands
    as features/online.py sends through
    features/resp.py, given as arguments (keys and field names prepared once, as there)."""

    def __init__(self, client: aioredis.Redis, cfg: FeatureConfig) -> None:
        self._client = client
        self._cfg = cfg
        self._keys = IndexKeys(cfg.project)
        self._fields = {view.name: {n: codec.field_key(view.name, n) for n in view.feature_names} for view in VIEWS.values()}
        self._entity_keys: dict[tuple[str, str], bytes] = {}

    async def execute(self, commands: Sequence[Sequence[bytes]]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command(*args)
            return await pipe.execute()

    def _key(self, view: str, entity_id: str) -> bytes:
        key = self._entity_keys.get((view, entity_id))
        if key is None:
            key = self._entity_keys[(view, entity_id)] = codec.entity_key(VIEWS[view].join_key, entity_id, self._cfg.project)
        return key

    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        commands: list[Sequence[bytes]] = []
        for row in rows:
            spec, fields = VIEWS[row.view], self._fields[row.view]
            args = [b"HSET", self._key(row.view, row.entity_id)]
            for name, value in row.values.items():
                args += (fields[name], codec.encode_value(spec.dtype(name), value))
            args += (codec.timestamp_field(row.view), codec.encode_timestamp(row.event_ts_ms))
            commands.append(args)
            commands.extend(index_args(row, self._keys, self._cfg))
        await self.execute(commands)

    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[dict[str, Any]]]:
        commands, plans = [], []
        for request in requests:
            spec = VIEWS[request.view]
            names = tuple(request.features or spec.feature_names)
            fields = [self._fields[spec.name][n] for n in names]
            commands += [(b"HMGET", self._key(spec.name, e), *fields) for e in request.entity_ids]
            plans.append((names, [codec.decoder(spec.dtype(n)) for n in names], len(request.entity_ids)))
        replies = await self.execute(commands)
        out, pos = [], 0
        for names, decoders, count in plans:
            out.append([{n: d(r) for n, d, r in zip(names, decoders, reply)} for reply in replies[pos : pos + count]])
            pos += count
        return out

    async def candidate_inputs(self, items: Sequence[str], users: Sequence[str], popular_depth: int) -> CandidateInputs:
        fields = [codec.field_key(ITEM_VIEW, name) for name in COVISIT_FIELDS]
        commands: list[Sequence[bytes]] = [(b"HMGET", codec.entity_key(ITEM_KEY, i, self._cfg.project), *fields) for i in items]
        commands.append((b"ZREVRANGE", self._keys.item_popularity.encode(), b"0", b"%d" % (popular_depth - 1)))
        commands += [(b"ZRANGE", self._keys.seen(u).encode(), b"0", b"-1") for u in users]
        return decode_candidate_inputs(items, users, await self.execute(commands))


class Workload:
    """The data both ways run on: MovieLens rows written once, and each operation's inputs."""

    def __init__(self, users: dict[str, Any], rows: list[FeatureRow], cfg: FeatureConfig, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.cfg = cfg
        self.rows = rows
        self.users = sorted(u for u, s in users.items() if s.recent)
        self.items = sorted({r.entity_id for r in rows if r.view == ITEM_VIEW})
        self.batch_users = [self.users[i] for i in rng.choice(len(self.users), 32, replace=False)]
        self.one_list = [self.items[i] for i in rng.choice(len(self.items), 200, replace=False)]
        picks = rng.choice(len(self.items), (32, 200))
        self.batch_items = list(dict.fromkeys(self.items[i] for i in picks.ravel()))
        self.recent_items = list(dict.fromkeys(e.item_id for u in self.batch_users for e in users[u].recent[: cfg.recent_items]))
        self.payload = b'{"items": [%s]}' % b", ".join(b'{"item_id": "%d", "score": 0.%d}' % (i, i) for i in range(10))


def _ranker_requests(users: Sequence[str], items: Sequence[str]) -> list[ReadRequest]:
    return [ReadRequest(USER_VIEW, users, RANKER_COLUMNS), ReadRequest(ITEM_VIEW, items, RANKER_COLUMNS)]


def operations(work: Workload, store: RedisFeatureStore, pipe: PipelineClient, depth: int) -> dict[str, tuple[Operation, Operation]]:
    """Per operation: (resp.py way, pipeline way), each a fresh coroutine per call."""
    batch = work.rows[-work.cfg.batch_size :]  # the newest rows: users with full recent lists
    one, many = _ranker_requests(work.batch_users[:1], work.one_list), _ranker_requests(work.batch_users, work.batch_items)
    every = [ReadRequest(USER_VIEW, work.batch_users[:1]), ReadRequest(ITEM_VIEW, work.one_list[:100])]
    lists: list[ListWrite] = [(u, 1, work.payload) for u in work.batch_users]
    cache_keys = ListCacheKeys(work.cfg.project)
    return {
        f"write {len(batch)} rows": (lambda: store.write_batch(batch), lambda: pipe.write_batch(batch)),
        "read 1x200": (lambda: store.read_many(one), lambda: pipe.read_many(one)),
        f"read 32x{len(work.batch_items)}": (lambda: store.read_many(many), lambda: pipe.read_many(many)),
        "read all 1x100": (lambda: store.read_many(every), lambda: pipe.read_many(every)),
        "candidates 32": (lambda: store.candidate_inputs(work.recent_items, work.batch_users, depth),
                          lambda: pipe.candidate_inputs(work.recent_items, work.batch_users, depth)),
        "cache 32": (lambda: store.write_lists(lists, CACHE_TTL_S),
                     lambda: pipe.execute([cache_keys.write_args(w, CACHE_TTL_S) for w in lists])),
    }


async def _check_same(ops: dict[str, tuple[Operation, Operation]], work: Workload, url: str) -> dict[str, bool]:
    """Each read answers the same both ways; a batch written each way into its own project reads back the same."""
    same = {}
    for name, (by_resp, by_pipeline) in ops.items():
        if name.startswith("read "):
            same[name] = await by_resp() == await by_pipeline()
    same["candidates 32"] = await ops["candidates 32"][0]() == await ops["candidates 32"][1]()
    same["write"] = await _written_alike(work, url)
    return same


async def _written_alike(work: Workload, url: str) -> bool:
    batch = work.rows[-work.cfg.batch_size :]
    views: dict[str, dict[str, None]] = {}
    for row in batch:
        views.setdefault(row.view, {})[row.entity_id] = None
    dumps = []
    for project, way in (("bench_redis_check_resp", "resp"), ("bench_redis_check_pipeline", "pipeline")):
        cfg = work.cfg.model_copy(update={"project": project})
        store = RedisFeatureStore.from_url(url, cfg)
        client = redis_client(url)
        try:
            await (store.write_batch(batch) if way == "resp" else PipelineClient(client, cfg).write_batch(batch))
            keys = IndexKeys(project)
            rows = await store.read_many([ReadRequest(v, list(ids)) for v, ids in views.items()])
            stamps = [await store.read_row_timestamps(v, list(ids)) for v, ids in views.items()]
            indexes = [await client.zrange(k, 0, -1, withscores=True) for k in (keys.item_mean, keys.item_popularity)]
            seen = [await client.zrange(keys.seen(u), 0, -1, withscores=True) for u in views.get(USER_VIEW, {})]
            dumps.append((rows, stamps, indexes, seen))
        finally:
            await store.close()
            await client.aclose()
    return dumps[0] == dumps[1]


def _figures(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples), 4),
            "p90_ms": round(float(np.percentile(samples, 90)), 4), "min_ms": round(min(samples), 4)}


async def _time(op: Operation) -> tuple[float, float]:
    began, began_cpu = time.perf_counter(), time.process_time()
    await op()
    return (time.perf_counter() - began) * 1000, (time.process_time() - began_cpu) * 1000


async def measure(url: str, events: int, repeats: int, warmup: int = 20) -> dict[str, Any]:
    from streamrec.models.datasets import load_movielens

    cfg = FeatureConfig(project="bench_redis")
    store = RedisFeatureStore.from_url(url, cfg)
    recorder = _Recording.from_url(url, cfg)
    frame = load_movielens().interactions.sort_values("ts").tail(events)
    try:
        users = await replay_events(recorder, bench_events(frame), cfg)
    finally:
        await recorder.close()
    work = Workload(users, recorder.rows, cfg)
    pipe_client = redis_client(url)
    pipe = PipelineClient(pipe_client, cfg)
    try:
        ops = operations(work, store, pipe, depth=500)
        same = await _check_same(ops, work, url)
        timings: dict[str, dict[str, dict[str, list[float]]]] = {
            name: {w: {"wall": [], "cpu": []} for w in ("resp", "pipeline")} for name in ops}
        load_start = os.getloadavg()[0]
        for round_ in tqdm(range(warmup + repeats), desc="rounds (each: every operation both ways)", unit="round"):
            for name, pair in ops.items():
                order = ("resp", "pipeline") if round_ % 2 == 0 else ("pipeline", "resp")  # neither always goes first
                for way in order:
                    wall, cpu = await _time(pair[0] if way == "resp" else pair[1])
                    if round_ >= warmup:
                        timings[name][way]["wall"].append(wall)
                        timings[name][way]["cpu"].append(cpu)
    finally:
        await store.close()
        await pipe_client.aclose()
    result: dict[str, Any] = {"operations": {}, "replies_equal": same, "repeats": repeats, "warmup": warmup,
                              "events_replayed": events, "rows_written": len(work.rows)}
    for name, ways in timings.items():
        row: dict[str, Any] = {way: {"wall": _figures(t["wall"]), "cpu": _figures(t["cpu"])} for way, t in ways.items()}
        row["speedup"] = {kind: round(row["pipeline"][kind]["median_ms"] / row["resp"][kind]["median_ms"], 2)
                          for kind in ("wall", "cpu")}
        result["operations"][name] = row
    result["load_avg_1m"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    result["versions"] = _versions()
    return result


class _Recording(RedisFeatureStore):
    """The store, keeping every row written through it (the write operation's batch)."""

    def __init__(self, client: aioredis.Redis, cfg: FeatureConfig) -> None:
        super().__init__(client, cfg)
        self.rows: list[FeatureRow] = []

    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        self.rows.extend(rows)
        await super().write_batch(rows)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("redis", "hiredis")}


def start_redis(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port; stop it with ``stop_process``."""
    from streamrec.infra.services import ensure_redis_server, redis_spec
    from streamrec.infra.stack import free_port

    spec = redis_spec(ensure_redis_server(), "127.0.0.1", free_port(), data_dir)
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    assert spec.prepare is not None
    spec.prepare()
    process = subprocess.Popen(spec.argv, cwd=data_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not spec.ready("127.0.0.1", spec.port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"redis-server did not start on port {spec.port}")
        time.sleep(0.05)
    return process, f"redis://127.0.0.1:{spec.port}/0"


def _print(result: dict[str, Any]) -> None:
    load = result["load_avg_1m"]
    print(f"features/resp.py vs redis-py pipeline (redis {result['versions']['redis']}, hiredis "
          f"{result['versions']['hiredis']}); medians of {result['repeats']} rounds, ms; "
          f"load average {load['start']} -> {load['end']} on {load['cpus']} CPUs")
    print(f"{'operation':22s} {'resp wall':>10s} {'pipeline wall':>14s} {'x':>6s} {'resp cpu':>10s} {'pipeline cpu':>13s} {'x':>6s}")
    for name, row in result["operations"].items():
        print(f"{name:22s} {row['resp']['wall']['median_ms']:10.3f} {row['pipeline']['wall']['median_ms']:14.3f} "
              f"{row['speedup']['wall']:6.2f} {row['resp']['cpu']['median_ms']:10.3f} {row['pipeline']['cpu']['median_ms']:13.3f} "
              f"{row['speedup']['cpu']:6.2f}")
    print("replies equal both ways: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["replies_equal"].items()))


def handle(args: argparse.Namespace) -> int:
    from streamrec.stream.runtime import stop_process

    with tempfile.TemporaryDirectory(prefix="streamrec-bench-redis-") as tmp:
        process, url = start_redis(Path(tmp))
        try:
            result = asyncio.run(measure(url, args.events, args.repeats))
        finally:
            stop_process(process, grace_s=5)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    _print(result)
    print(f"wrote {args.json}")
    return 0 if all(result["replies_equal"].values()) else 1


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds ``streamrec bench redis`` (streamrec.tools.cli)."""
    p = bench_subparsers.add_parser("redis", help="features/resp.py against redis-py's pipeline on the worker's Redis batches")
    p.add_argument("--events", type=int, default=20_000, help="MovieLens ratings replayed to fill the store (default 20000)")
    p.add_argument("--repeats", type=int, default=300, help="timed rounds, every operation both ways in each (default 300)")
    p.add_argument("--json", type=Path, default=Path("var/bench/redis.json"))
    p.set_defaults(func=handle)
