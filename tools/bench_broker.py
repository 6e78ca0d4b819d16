"""``streamrec bench broker``: one bare broker hop, over time, for several producer lingers.

What the pipeline can achieve is bounded by its broker, so this measures the broker
alone: a plain aiokafka producer sends timestamped messages at a fixed rate to a topic
on a fresh embedded stack and a plain consumer (fetch wait from the settings) reads
them in the same process; latency = receive − send. It runs once per ``--linger``
value, each on its own fresh broker, and reports p50/p99 per ``--window`` seconds, so
a latency that grows with the data the broker holds shows as a trend.

It showed why the embedded broker is Apache Kafka now: on the previous one (Tansu's
memory engine) the hop climbed from p50 7 ms to seconds within a minute at 1,000 msg/s,
while Kafka's stays flat (README, "The embedded broker"). JSON: per linger, ``windows``
(start_s, p50_ms, p99_ms) and overall ``p50_ms``/``p99_ms``; a PNG beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm


async def _one_hop(bootstrap: str, fetch_wait_ms: int, rate: float, duration_s: float, linger_ms: int,
                   partitions: int) -> np.ndarray:
    """(send offset s, latency ms) per message."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("probe", partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    consumer = AIOKafkaConsumer("probe", bootstrap_servers=bootstrap, fetch_max_wait_ms=fetch_wait_ms,
                                auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    began_wall = time.time()
    samples: list[tuple[float, float]] = []

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                samples.extend((float(r.value) - began_wall, (now - float(r.value)) * 1000) for r in records)

    reader = asyncio.create_task(read())
    try:
        total = int(rate * duration_s)
        began = time.perf_counter()
        for n in tqdm(range(total), desc=f"linger {linger_ms} ms", unit="msg"):
            delay = began + n / rate - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
            await producer.send("probe", str(time.time()).encode(), key=b"%d" % (n % 97))
        await producer.flush()
        deadline = time.perf_counter() + 30
        while len(samples) < total and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    return np.asarray(samples, dtype=np.float64)


def summarise(samples: np.ndarray, window_s: float) -> dict[str, Any]:
    """Overall and per-window p50/p99 of (send offset s, latency ms) samples."""
    if samples.size == 0:
        return {"messages": 0, "p50_ms": None, "p99_ms": None, "windows": []}
    windows = []
    for start in np.arange(0.0, samples[:, 0].max() + 1e-9, window_s):
        mask = (samples[:, 0] >= start) & (samples[:, 0] < start + window_s)
        if mask.any():
            p50, p99 = np.percentile(samples[mask, 1], [50, 99])
            windows.append({"start_s": round(float(start), 1), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)})
    p50, p99 = np.percentile(samples[:, 1], [50, 99])
    return {"messages": int(len(samples)), "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2), "windows": windows}


def run(rate: float, duration_s: float, lingers: list[int], window_s: float, partitions: int) -> dict[str, Any]:
    from streamrec.infra.stack import EmbeddedStack, StackConfig
    from streamrec.stream.settings import load_settings

    fetch_wait_ms = load_settings().broker.fetch_max_wait_ms or 5
    result: dict[str, Any] = {"rate": rate, "duration_s": duration_s, "partitions": partitions,
                              "fetch_max_wait_ms": fetch_wait_ms, "lingers": {}}
    for linger in lingers:
        with tempfile.TemporaryDirectory(prefix="streamrec-broker-") as tmp:
            stack = EmbeddedStack(StackConfig.on_free_ports(Path(tmp)))
            try:
                stack.up()
                samples = asyncio.run(_one_hop(stack.config.bootstrap_servers, fetch_wait_ms, rate, duration_s, linger, partitions))
            finally:
                stack.down()
        result["lingers"][str(linger)] = summarise(samples, window_s)
    return result


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for linger, figures in result["lingers"].items():
        starts = [w["start_s"] for w in figures["windows"]]
        line, = ax.plot(starts, [w["p50_ms"] for w in figures["windows"]], marker="o", label=f"linger {linger} ms p50")
        ax.plot(starts, [w["p99_ms"] for w in figures["windows"]], linestyle="--", color=line.get_color(), label=f"linger {linger} ms p99")
    ax.set_yscale("log")
    ax.set_xlabel("send time (s since start)")
    ax.set_ylabel("one broker hop (ms)")
    ax.set_title(f"producer → broker → consumer at {result['rate']:g} msg/s (fetch wait {result['fetch_max_wait_ms']} ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def handle(args: argparse.Namespace) -> int:
    result = run(args.rate, args.duration, args.linger, args.window, args.partitions)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    plot = args.json.with_suffix(".png")
    _plot(result, plot)
    result["plot"] = str(plot)
    args.json.write_text(json.dumps(result, indent=1))
    for linger, figures in result["lingers"].items():
        trend = "  ".join(f"{w['start_s']:g}s {w['p50_ms']:.1f}/{w['p99_ms']:.1f}" for w in figures["windows"])
        print(f"[broker] linger {linger:>3} ms  p50 {figures['p50_ms']} p99 {figures['p99_ms']} ms   per window p50/p99: {trend}")
    print(f"[broker] wrote {args.json} and {plot}")
    return 0


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls: adds ``streamrec bench broker``."""
    p = bench_subparsers.add_parser("broker", help="one bare broker hop over time, per producer linger (what bounds the pipeline)")
    p.add_argument("--rate", type=float, default=1000.0, help="messages per second (default 1000)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per linger value (default 60)")
    p.add_argument("--linger", type=int, nargs="+", default=[2, 20], help="producer linger values in ms (default 2 20)")
    p.add_argument("--window", type=float, default=10.0, help="seconds per reported window (default 10)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--json", type=Path, default=Path("var/bench/broker.json"))
    p.set_defaults(func=handle)
