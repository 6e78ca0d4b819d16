"""The live demo: embedded stack + one worker + the gateway + a replay of real events, with output.

Starts what is not already running (and later stops only that), replays MovieLens
ratings at a fixed rate, prints the shopper and monitoring pages' addresses, and prints
recommendations and metrics snapshots as they arrive until Ctrl-C or ``duration_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.features.messages import ClickEvent, EventType, Recommendation
from streamrec.infra.errors import StackError
from streamrec.infra.kafka_clients import consumer, producer
from streamrec.stream.runtime import spawn_worker, stack_from, stop_process
from streamrec.stream.settings import Settings, load_settings
from streamrec.stream.tail import format_metrics, format_recommendation
from streamrec.stream.topics import ensure_topics

if TYPE_CHECKING:
    from streamrec.stream.gateway.server import GatewayProcess

PRINT_EVERY_S = 0.5  # at most two recommendation lines a second: readable, still live


def run_demo(settings: Settings, *, duration_s: float | None, rate: float, dataset: str) -> int:
    """Blocking; stops what it started on return, error, Ctrl-C or SIGTERM (stream/signals.py)."""
    stack = stack_from(settings)
    already_up = bool(stack.status())
    worker, gateway = None, None
    try:
        for record in stack.up():
            print(f"[demo] {record.name} ready on port {record.port} (pid {record.pid})", flush=True)
        worker = _start_worker(settings)
        gateway = _start_gateway(settings)
        if gateway is None:
            return 1
        return asyncio.run(_live(settings, worker, gateway, duration_s=duration_s, rate=rate, dataset=dataset))
    except StackError as exc:
        print(f"[demo] {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
            print("[demo] gateway stopped", flush=True)
        if worker is not None:
            _stop_worker(worker)
        if not already_up:
            stopped = stack.down()
            print(f"[demo] stopped {', '.join(stopped)}", flush=True)


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log_dir = Path(settings.worker.data_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "demo-worker.log"
    print(f"[demo] starting worker (log {log})", flush=True)
    return spawn_worker(settings, log)


def _start_gateway(settings: Settings) -> GatewayProcess | None:
    """The browser gateway (shopper and monitoring pages), or None when it cannot start."""
    from streamrec.stream.gateway.server import spawn_gateway

    log_dir = Path(settings.gateway.data_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "demo-gateway.log"
    print(f"[demo] starting the gateway (log {log})", flush=True)
    try:
        return spawn_gateway(settings, log)
    except RuntimeError as exc:
        print(f"[demo] {exc}", file=sys.stderr)
        return None


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    stop_process(worker)
    print(f"[demo] worker stopped (exit {worker.returncode})", flush=True)


async def _live(settings: Settings, worker: subprocess.Popen[bytes], gateway: GatewayProcess, *,
                duration_s: float | None, rate: float, dataset: str) -> int:
    from streamrec.models.datasets import load_dataset
    from streamrec.stream.replay import replay

    frame = load_dataset(dataset).interactions
    ready_s = await _wait_until_serving(settings, worker)
    if ready_s is None:
        return 1
    print(f"[demo] worker serving {ready_s:.1f} s after start; replaying {dataset} at {rate:g} events/s", flush=True)
    print(f"[demo] shopper page    {gateway.base_url}/shop", flush=True)
    print(f"[demo] monitoring page {gateway.base_url}/monitor", flush=True)
    started = time.monotonic()
    # The stack keeps its topics across runs: each demo's replay is new traffic (its own ids),
    # not a re-send of the last demo's events that the workers would skip as duplicates.
    run = uuid.uuid4().hex[:8]
    replay_task = asyncio.create_task(replay(settings, frame, dataset, rate=rate, duration_s=duration_s,
                                             progress=False, run=run))
    watch = asyncio.create_task(_print_outputs(settings, worker, started))
    deadline = None if duration_s is None else started + duration_s
    try:
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                print(f"[demo] the worker exited with code {worker.returncode}; see its log", file=sys.stderr)
                return 1
            if gateway.process.poll() is not None:
                print(f"[demo] the gateway exited with code {gateway.process.returncode}; see {gateway.log}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
    finally:
        for task in (replay_task, watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return 0


async def _wait_until_serving(settings: Settings, worker: subprocess.Popen[bytes], limit_s: float = 300.0) -> float | None:
    """Send one warm-up click and wait for its recommendation: the worker is then up
    (Feast repo applied, model loaded, partitions assigned). Returns seconds since start."""
    began = time.monotonic()
    t = settings.topics
    await ensure_topics(settings)
    inbox = consumer(settings.broker, t.recommendations, auto_offset_reset="latest")
    await inbox.start()
    out = producer(settings.broker)
    await out.start()
    try:
        warmup = ClickEvent(event_id=f"demo-warmup-{uuid.uuid4().hex}", user_id="demo-warmup", item_id="1",
                            type=EventType.CLICK, ts=datetime.now(timezone.utc))
        await out.send_and_wait(t.clickstream, warmup.to_bytes(), key=warmup.user_id.encode())
        while time.monotonic() - began < limit_s:
            if worker.poll() is not None:
                print(f"[demo] the worker exited with code {worker.returncode}; see its log", file=sys.stderr)
                return None
            for records in (await inbox.getmany(timeout_ms=500)).values():
                if any(Recommendation.model_validate_json(r.value).cause_event_id == warmup.event_id for r in records):
                    return time.monotonic() - began
        print(f"[demo] the worker did not serve within {limit_s:.0f} s; see its log", file=sys.stderr)
        return None
    finally:
        await out.stop()
        await inbox.stop()


async def _print_outputs(settings: Settings, worker: subprocess.Popen[bytes], started: float) -> None:
    t = settings.topics
    client = consumer(settings.broker, t.recommendations, t.metrics, auto_offset_reset="latest")
    await client.start()
    first = True
    last_print = 0.0
    try:
        while True:
            batch = await client.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    now = time.monotonic()
                    if tp.topic == t.metrics:
                        print(f"[metrics] {format_metrics(record.value)}", flush=True)
                    elif first or now - last_print >= PRINT_EVERY_S:
                        if first:
                            print(f"[demo] first recommendation {now - started:.1f} s after the replay started", flush=True)
                            first = False
                        print(f"[rec] {format_recommendation(record.value)}", flush=True)
                        last_print = now
    finally:
        await client.stop()


# -- the command ---------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds ``streamrec demo`` to the command line (streamrec.tools.cli)."""
    p = subparsers.add_parser("demo", help="the live demo: stack, worker, a replay of MovieLens, live output")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--rate", type=float, default=200.0, help="replay rate, events per second")
    p.add_argument("--dataset", default="movielens")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    return run_demo(load_settings(), duration_s=args.duration, rate=args.rate, dataset=args.dataset)
