"""``streamrec bench e2e``: event-send → recommendation-received latency through the
real stack, with a separate producer process, a real worker process and the broker.

One run: start an embedded stack on free ports (or use the broker and Redis given),
start ONE worker (``python -m streamrec.stream.cli worker``) with its own topics, app id, Feast
project and data dir, wait until a warm-up event gets its recommendation, then let
the load generator (``streamrec.tools.loadgen``, its own process) send events at a fixed rate
while this process reads ``recommendations`` and matches ``cause_event_id`` to the
sent events. Latency = receive time − send time (the event's ``ts``), both on this
machine's wall clock.

Per triggering event: *answered* (a recommendation with its id came back),
*covered* (a later event of the same user's list names it in ``covers``: the worker
ranked once for several events of a user in one batch, or the debounce held it),
*superseded* (neither, but the same user got a list caused by a later event), or
*lost* (none of these, after the grace period). Percentiles are over the answered and
covered events, a covered one timed to the arrival of the list that carried its effect. The worker's RSS and the CPU of
every process are sampled while the load runs.

The load runs ``--settle`` seconds (default 15) before the measured ``--duration``, at the
same rate: a broker just started takes its first ~15 s to JIT-compile its hot paths (its
JVM near a full core of the two), which a long-running broker has behind it. The settling
events count like any other for loss and ``verify``; their percentiles are reported apart
(``settle`` in the JSON, a second line on the console, grey in the plot), and the headline
figures, ``events`` and the CPU figures are the measured window's (``--settle 0``: all of it).

The JSON holds ``rate``, ``events``, ``recommendations``, ``lost``, ``p50_ms``,
``p95_ms``, ``p99_ms``, ``worker_rss_mb`` (the maximum; ``_final`` and ``_ready`` too),
and to tell where the time goes: ``breakdown`` (send → emit inside the worker,
emit → received here, the recommend step; from the messages' own latency fields),
``cpu_percent`` per process under load, ``idle_cpu_percent`` after warm-up (consumers
polling at the fetch wait), ``worker_cpu_ms_per_event`` (and above idle), the broker
settings, the load average and ``host``: how fast the machine was apart from streamrec
(CPU steal, how busy the cores were, a fixed probe's CPU time, how late a sleep wakes;
tools/host.py). A PNG beside it shows the distribution and latency over the run (a
sweep: percentiles by rate and a CDF per step).

``--sweep`` raises the rate (×2 per step) until p99 exceeds the target or events are
lost, then bisects, each step on a fresh stack and worker (the embedded broker slows
down as it accumulates batches; ``--sweep-one-stack`` reuses one); it stops after ``--sweep-steps`` steps, at
``--sweep-max-rate``, or when the bracket is within 10%.

``--workers N`` starts N workers in the one consumer group (each its own worker id and
data dir; the topics' partitions split among them): scale-out on one host. The warm-up
waits until every worker has answered; CPU is reported per worker and RSS as their sum.

Every run ends with ``streamrec verify`` (the worker's online counts and means
against a recomputation from its ``clickstream``): ``verify`` in the JSON, and the
exit status is 1 when it fails.

Everything it starts it stops, by PID, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil
from pydantic import BaseModel, Field, ValidationError, model_validator

from streamrec.stream.settings import Settings
from streamrec.stream.signals import sigterm_as_interrupt
from streamrec.tools.host import HostWindow

WARMUP_USERS = 20
SAMPLE_EVERY_S = 0.5


class BenchError(RuntimeError):
    """The bench could not run (worker died, stack failed, producer failed)."""


# -- configuration -------------------------------------------------------------------
class E2EConfig(BaseModel):
    """What to run. Times in seconds, rates in events/s, latencies in ms."""

    model_config = {"extra": "forbid"}

    rate: float = Field(default=500.0, gt=0, le=100_000)
    duration_s: float = Field(default=60.0, gt=0, le=3600)
    json_path: Path = Path("var/bench/e2e.json")
    source: Literal["movielens", "clicks"] = "movielens"
    grace_s: float = Field(default=10.0, ge=0, le=600)
    warmup_timeout_s: float = Field(default=300.0, gt=0)  # the worker's start: Feast apply, model, group join
    # load sent before the measured ``duration_s``, at the same rate: a just-started broker's JVM
    # compiles its hot paths in its first ~15 s; those events are verified and counted as lost if
    # unanswered, and their latencies are reported apart (``settle``), not in the headline percentiles
    settle_s: float = Field(default=15.0, ge=0, le=600)
    # the load generator's producer linger: 0, as the gateway sends a shopper's event (at once); a
    # 5 ms linger (the Java client's and librdkafka's default) adds ~6 ms to the p50 (README)
    linger_ms: int = Field(default=0, ge=0, le=1000)
    partitions: int | None = Field(default=None, ge=1, le=1024)
    bootstrap_servers: str | None = None
    redis_url: str | None = None
    sweep: bool = False
    p99_target_ms: float = Field(default=250.0, gt=0)
    sweep_start: float = Field(default=100.0, gt=0)
    sweep_factor: float = Field(default=2.0, gt=1)
    sweep_max_rate: float = Field(default=4000.0, gt=0)
    sweep_steps: int = Field(default=7, ge=1, le=30)
    sweep_resolution: float = Field(default=0.1, gt=0, lt=1)
    sweep_fresh_stack: bool = True  # own stack: a new broker, Redis and worker per step
    profile: bool = False  # py-spy flame graph of the worker per step
    progress: bool = True
    users: int | None = Field(default=None, ge=1)  # clicks: synthetic users instead of MovieLens's 943
    timeline_every_s: float | None = Field(default=None, gt=0)  # sample RSS and group lag this often (the soak)
    workers: int = Field(default=1, ge=1, le=8)  # worker processes in the one consumer group (scale-out on one host)
    # the workers on the machine's last core, the stack, the load generator and the bench on the others
    pin: bool = False

    @property
    def sweep_search(self) -> dict[str, float]:
        """The keyword arguments of :func:`next_sweep_rate` for this run."""
        return {"start": self.sweep_start, "factor": self.sweep_factor, "max_rate": self.sweep_max_rate,
                "resolution": self.sweep_resolution}

    @model_validator(mode="after")
    def _external_needs_both(self) -> E2EConfig:
        if (self.bootstrap_servers is None) != (self.redis_url is None):
            raise ValueError("--bootstrap and --redis-url go together (or neither: the bench starts its own stack)")
        return self


# -- pure analysis -------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    event_id: str
    user_id: str
    send_s: float  # epoch seconds
    triggering: bool


@dataclass(frozen=True)
class Received:
    recv_s: float  # epoch seconds
    event_to_emit_ms: float | None = None  # the worker's own figures, from the message
    recommend_ms: float | None = None
    ingest_ms: float | None = None  # the cause event's ts → its batch began in the worker
    update_ms: float | None = None  # the batch began → ranking began
    covers: tuple[str, ...] = ()  # earlier events of the user this list also answers


@dataclass
class Match:
    latencies_ms: np.ndarray  # answered triggering events, in send order
    send_s: np.ndarray  # their send times
    triggering: int
    answered: int
    superseded: int
    lost_ids: list[str] = field(default_factory=list)
    covered: int = 0

    @property
    def lost(self) -> int:
        return len(self.lost_ids)


def match(sent: Sequence[Sent], received: Mapping[str, Received]) -> Match:
    """Pair each triggering sent event with the recommendation caused by it.

    An unanswered event is *covered* when a list names it in ``covers`` (timed to that
    list's arrival), *superseded* when its user has an answered event sent later (its
    effect reached that later list), else *lost*.
    """
    triggering = [s for s in sent if s.triggering]
    covered_at: dict[str, float] = {}  # event id -> first arrival of a list covering it
    for answer in received.values():
        for event_id in answer.covers:
            covered_at[event_id] = min(covered_at.get(event_id, np.inf), answer.recv_s)
    last_answered: dict[str, float] = {}
    for s in triggering:
        if s.event_id in received:
            last_answered[s.user_id] = max(last_answered.get(s.user_id, -np.inf), s.send_s)
    latencies: list[float] = []
    send_times: list[float] = []
    lost: list[str] = []
    superseded = answered = covered = 0
    for s in triggering:
        got = received.get(s.event_id)
        arrived = got.recv_s if got is not None else covered_at.get(s.event_id)
        if arrived is not None:
            latencies.append((arrived - s.send_s) * 1000.0)
            send_times.append(s.send_s)
            answered += got is not None
            covered += got is None
        elif last_answered.get(s.user_id, -np.inf) > s.send_s:
            superseded += 1
        else:
            lost.append(s.event_id)
    return Match(np.asarray(latencies, dtype=np.float64), np.asarray(send_times, dtype=np.float64),
                 triggering=len(triggering), answered=answered, superseded=superseded, lost_ids=lost, covered=covered)


def latency_summary(latencies_ms: Sequence[float] | np.ndarray, prefix: str = "") -> dict[str, float | None]:
    """p50/p95/p99/max/mean in ms (linear-interpolated percentiles); None when empty."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    keys = ("p50", "p95", "p99", "max", "mean")
    if values.size == 0:
        return {f"{prefix}{k}_ms": None for k in keys}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    figures = (p50, p95, p99, values.max(), values.mean())
    return {f"{prefix}{k}_ms": round(float(v), 3) for k, v in zip(keys, figures)}


def next_sweep_rate(history: Sequence[tuple[float, bool]], *, start: float, factor: float,
                    max_rate: float, resolution: float) -> float | None:
    """The next rate to try given (rate, ok) so far, or None when the search is done.

    Grows by ``factor`` while every step is ok (capped at ``max_rate``), then bisects
    between the best ok rate and the lowest failing one until they are within
    ``resolution`` (relative) of each other.
    """
    if not history:
        return min(start, max_rate)
    ok = [r for r, good in history if good]
    bad = [r for r, good in history if not good]
    if not bad:
        best = max(ok)
        return None if best >= max_rate else min(best * factor, max_rate)
    lo, hi = max([r for r in ok if r < min(bad)], default=0.0), min(bad)
    if hi - lo <= resolution * hi:
        return None
    mid = (lo + hi) / 2
    rounded = round(mid, 1)
    return rounded if lo < rounded < hi else mid


def step_ok(result: Mapping[str, Any], p99_target_ms: float) -> bool:
    """A step holds when nothing is lost, p99 is within target and the producer kept the rate (≥ 95%)."""
    p99 = result.get("p99_ms")
    return (result["lost"] == 0 and p99 is not None and p99 <= p99_target_ms
            and result["achieved_rate"] >= 0.95 * result["rate"])


# -- processes -----------------------------------------------------------------------
def _stop(process: subprocess.Popen[bytes], grace_s: float = 20.0, first: signal.Signals = signal.SIGTERM) -> None:
    """Signal ``process`` (SIGTERM unless told), wait ``grace_s``, then kill it."""
    if process.poll() is None:
        process.send_signal(first)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        _stop(process, grace_s=5.0)
        if process.stdout is not None:
            process.stdout.close()


class WorkerProcess:
    """One ``python -m streamrec.stream.cli worker`` child with the given settings in its environment."""

    def __init__(self, settings: Settings, log: Path) -> None:
        from streamrec.stream.runtime import spawn_worker

        self.settings, self.log = settings, log
        self.process = spawn_worker(settings, log)
        self.ps = psutil.Process(self.process.pid)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the worker exited with code {self.process.returncode}; log {self.log}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stop(self) -> None:
        _stop(self.process)


class CpuWindow:
    """CPU use of some processes between ``start`` and ``stop``, in % of one core."""

    def __init__(self, processes: Mapping[str, psutil.Process]) -> None:
        self.processes = dict(processes)
        self._begin: dict[str, float] = {}
        self._t0 = 0.0
        self.percent: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  # CPU seconds used in the window
        self.wall_s = 0.0

    @staticmethod
    def _cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._begin = {name: self._cpu(p) for name, p in self.processes.items()}

    def stop(self) -> dict[str, float]:
        wall = self.wall_s = max(time.monotonic() - self._t0, 1e-9)
        for name, p in self.processes.items():
            try:
                self.seconds[name] = self._cpu(p) - self._begin[name]
            except psutil.Error:
                continue
            self.percent[name] = round(100 * self.seconds[name] / wall, 1)
        return self.percent


# -- the recommendations side --------------------------------------------------------
class Collector:
    """Reads ``recommendations`` from the beginning and keeps the first arrival per cause event."""

    def __init__(self, settings: Settings) -> None:
        from streamrec.infra.kafka_clients import consumer

        self.client = consumer(settings.broker, settings.topics.recommendations, auto_offset_reset="earliest")
        self.received: dict[str, Received] = {}
        self.duplicates = 0
        self.model_versions: set[str] = set()
        self.worker_ids: set[str] = set()  # the workers that sent a list
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.stop()

    async def _run(self) -> None:
        while True:
            batch = await self.client.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    message = json.loads(record.value)
                    cause = message["cause_event_id"]
                    if cause in self.received:
                        self.duplicates += 1
                        continue
                    self.model_versions.add(str(message.get("model_version")))
                    self.worker_ids.add(str(message.get("worker_id")))
                    stages = message.get("latency_ms") or {}
                    self.received[cause] = Received(now, stages.get("event_to_emit"), stages.get("total"),
                                                    covers=tuple(message.get("covers") or ()),
                                                    ingest_ms=stages.get("ingest"), update_ms=stages.get("update"))


# -- one bench session ---------------------------------------------------------------
@dataclass
class BenchSession:
    config: E2EConfig
    settings: Settings
    workers: list[WorkerProcess]  # one unless --workers: the same group, each its own id and data dir
    run_dir: Path
    run_id: str
    stack_pids: dict[str, int]
    children: list[subprocess.Popen[bytes]]  # producers and profilers: stopped on exit whatever happens
    rss_samples: list[float] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)  # (t, RSS, lag) samples when asked for
    idle_cpu_percent: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def worker(self) -> WorkerProcess:
        """The first worker (the only one by default): the one profiled."""
        return self.workers[0]

    def check_workers(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    def rss_mb(self) -> float:
        """The workers' RSS together (one worker's with the default of one)."""
        return sum(worker.rss_mb() for worker in self.workers)


def bench_settings(base: Settings, *, bootstrap_servers: str, redis_url: str, run_id: str, data_dir: Path,
                   partitions: int | None) -> Settings:
    """``base`` with the bench's broker/Redis and names of its own (topics, app id, Feast project)."""
    from streamrec.stream.settings import load_settings

    dump = json.loads(base.model_dump_json())
    dump["broker"].update(bootstrap_servers=bootstrap_servers, partitions=partitions or base.broker.partitions)
    if base.broker.sasl_password is not None:
        dump["broker"]["sasl_password"] = base.broker.sasl_password.get_secret_value()
    dump["redis"].update(url=redis_url, password=base.redis.password.get_secret_value() if base.redis.password else None)
    dump["topics"] = {name: f"bench-{run_id}.{name}" for name in dump["topics"]}
    dump["worker"].update(app_id=f"bench-{run_id}", id=f"bench-{run_id}", data_dir=str(data_dir))
    dump["features"].update(project=f"bench_{run_id}")
    return load_settings(**dump)


def worker_as(settings: Settings, k: int, data_dir: Path) -> Settings:
    """``settings`` for the ``k``-th worker of the bench's group: the same app id and
    topics, its own worker id (the ``worker_id`` of its lists) and data dir."""
    worker = settings.worker.model_copy(update={"id": f"{settings.worker.id}-{k}", "data_dir": data_dir})
    return settings.model_copy(update={"worker": worker})


async def _warm_up(session: BenchSession, collector: Collector) -> float:
    """Send warm-up clicks (a second apart, the warm-up users in turn) until every worker
    has answered one, then one per warm-up user; returns seconds taken."""
    from streamrec.features.messages import ClickEvent, EventType
    from streamrec.infra.kafka_clients import producer

    s, began = session.settings, time.monotonic()
    client = producer(s.broker, linger_ms=0)
    await client.start()

    async def send(n: int, user: str) -> str:
        event = ClickEvent(event_id=f"warmup-{session.run_id}-{n}", user_id=user, item_id="1",
                           type=EventType.CLICK, ts=datetime.now(timezone.utc))
        await client.send_and_wait(s.topics.clickstream, event.to_bytes(), key=user.encode())
        return event.event_id

    try:
        n = 0
        while len(collector.worker_ids) < len(session.workers):
            if time.monotonic() - began > session.config.warmup_timeout_s:
                silent = [w for w in session.workers if w.settings.worker.id not in collector.worker_ids]
                raise BenchError(f"no recommendation from {len(silent)} worker(s) within {session.config.warmup_timeout_s} s "
                                 f"of warm-up; worker log {silent[0].log}:\n{silent[0].log_tail()}")
            session.check_workers()
            await send(n, f"bench-warmup-{n % WARMUP_USERS}")
            n += 1
            await asyncio.sleep(1.0)
        ids = [await send(n + i, f"bench-warmup-{i}") for i in range(WARMUP_USERS)]
        deadline = time.monotonic() + 30
        while not all(i in collector.received for i in ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await client.stop()
    return time.monotonic() - began


async def _start_producer(session: BenchSession, rate: float, step: int, start_row: int) -> tuple[subprocess.Popen[bytes], Path]:
    from streamrec.stream.runtime import settings_env

    out = session.run_dir / f"sent-{step}.json"
    seconds = session.config.settle_s + session.config.duration_s
    argv = [sys.executable, "-m", "streamrec.tools.loadgen", "--rate", str(rate), "--duration", str(seconds),
            "--out", str(out), "--run-id", f"{session.run_id}-s{step}", "--source", session.config.source,
            "--start-row", str(start_row), "--linger-ms", str(session.config.linger_ms)]
    if session.config.users:
        argv += ["--users", str(session.config.users)]
    log = open(session.run_dir / f"producer-{step}.log", "ab")  # noqa: SIM115 - the child writes to it
    env = {**os.environ, **settings_env(session.settings)}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
    session.children.append(proc)
    log.close()
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    if line.strip() != b"ready":
        _stop(proc)
        proc.stdout.close()
        raise BenchError(f"the load generator failed to start; see {log.name}")
    return proc, out


def _read_sent(path: Path) -> tuple[list[Sent], float]:
    log = json.loads(path.read_text())
    return [Sent(str(e), str(u), float(t), bool(trig)) for e, u, t, trig in log["events"]], float(log["producer_cpu_s"])


def _measured_processes(session: BenchSession) -> dict[str, psutil.Process]:
    workers = {"worker": session.worker.ps} if len(session.workers) == 1 else \
        {f"worker-{k}": w.ps for k, w in enumerate(session.workers)}
    return {**workers, "bench": psutil.Process(),
            **{name: psutil.Process(pid) for name, pid in session.stack_pids.items() if psutil.pid_exists(pid)}}


async def _idle_cpu(session: BenchSession, seconds: float = 3.0) -> dict[str, float]:
    """CPU % of the worker, the stack and this process with no events flowing (consumers polling)."""
    cpu = CpuWindow(_measured_processes(session))
    cpu.start()
    await asyncio.sleep(seconds)
    return cpu.stop()


async def _run_step(session: BenchSession, collector: Collector, rate: float, step: int, start_row: int) -> dict[str, Any]:
    from tqdm import tqdm

    cfg = session.config
    processes = _measured_processes(session)
    producer, sent_path = await _start_producer(session, rate, step, start_row)
    profiler = _start_profiler(session, step) if cfg.profile else None
    load_before = os.getloadavg()[0]
    cpu, host = CpuWindow(processes), HostWindow()
    cpu.start()
    host.start()
    rss: list[float] = []
    expected = round(rate * (cfg.settle_s + cfg.duration_s))
    before = len(collector.received)
    bar = tqdm(total=expected, unit="rec", desc=f"e2e {rate:g}/s", disable=not cfg.progress, leave=False)
    began, next_sample, settling = time.time(), 0.0, cfg.settle_s > 0
    try:
        while producer.poll() is None:
            session.check_workers()
            if settling and time.time() - began >= cfg.settle_s:
                settling = False
                cpu.start()  # the CPU figures are the measured window's
                host.start()
                load_before = os.getloadavg()[0]
            rss.append(session.rss_mb())
            bar.update(len(collector.received) - before - bar.n)
            if cfg.timeline_every_s is not None and time.time() - began >= next_sample:
                next_sample += cfg.timeline_every_s
                session.timeline.append({"t": round(time.time() - began, 2), "send_epoch_s": time.time(),
                                         "rss_mb": round(rss[-1], 1), "lag": await group_lag(session.settings)})  # type: ignore[dict-item]
            await asyncio.sleep(SAMPLE_EVERY_S)
        if producer.returncode != 0:
            raise BenchError(f"the load generator exited with code {producer.returncode}")
        sent, producer_cpu_s = _read_sent(sent_path)
        pending = {s.event_id for s in sent if s.triggering}
        deadline = time.monotonic() + cfg.grace_s
        while time.monotonic() < deadline and not pending <= collector.received.keys():
            bar.update(len(collector.received) - before - bar.n)
            rss.append(session.rss_mb())
            await asyncio.sleep(0.1)
    finally:
        host_figures = host.stop()  # its probe process too, on any way out
        bar.close()
        _stop(producer)
        if producer.stdout is not None:
            producer.stdout.close()
        if profiler is not None:
            _stop(profiler, first=signal.SIGINT)  # py-spy writes its file on SIGINT
    cpu_percent = cpu.stop()
    span = max(sent[-1].send_s - sent[0].send_s, 1e-9) if len(sent) > 1 else cfg.settle_s + cfg.duration_s
    cpu_percent["producer"] = round(100 * producer_cpu_s / span, 1)  # over the whole send, settling included
    session.rss_samples.extend(rss)
    result = _step_result(rate, sent, collector.received, rss, cpu_percent, span, settle_s=cfg.settle_s)
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["host"] = host_figures  # how fast the machine was apart from streamrec (tools/host.py)
    # the worker's CPU cost per event served: what bounds throughput when cores are scarce
    served = result["recommendations"] + result["covered"] + result["superseded"]  # in the measured window
    worker_s = sum(v for name, v in cpu.seconds.items() if name.startswith("worker"))  # every worker's
    idle_percent = sum(v for name, v in session.idle_cpu_percent.items() if name.startswith("worker"))
    busy_s = worker_s - idle_percent / 100 * cpu.wall_s  # less the idle polling
    result["worker_cpu_ms_per_event"] = round(1000 * worker_s / served, 3) if served else None
    result["worker_cpu_ms_per_event_above_idle"] = round(1000 * max(busy_s, 0.0) / served, 3) if served else None
    if profiler is not None:
        result["worker_profile"] = str(session.run_dir / f"worker-profile-{step}.svg")
    return result


def _start_profiler(session: BenchSession, step: int) -> subprocess.Popen[bytes]:
    """``py-spy record`` on the worker (py-spy is not a dependency: install it to use ``--profile``)."""
    binary = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if binary is None:
        raise BenchError("--profile needs py-spy (pip install py-spy==0.4.3)")
    out = session.run_dir / f"worker-profile-{step}.svg"
    with open(session.run_dir / f"profiler-{step}.log", "ab") as log:
        proc = subprocess.Popen([binary, "record", "-p", str(session.worker.process.pid), "-o", str(out), "-r", "100"],
                                stdout=log, stderr=subprocess.STDOUT)
    session.children.append(proc)
    return proc


def split_settle(sent: Sequence[Sent], settle_s: float) -> tuple[list[Sent], float]:
    """The events sent after the first ``settle_s`` seconds of the send (the measured
    window) and when that window began (epoch s)."""
    if not sent:
        return [], 0.0
    begins = sent[0].send_s + settle_s
    return [s for s in sent if s.send_s >= begins], begins


def ends(m: Match, at_most_s: float = 60.0) -> dict[str, Any]:
    """The latencies of the events sent in the first and in the last stretch of ``m``'s
    send times (``at_most_s``, or a quarter of the span when that is shorter): does
    latency climb over a run?"""
    if m.send_s.size == 0:
        return {}
    first, last = m.send_s.min(), m.send_s.max()
    seconds = round(min(at_most_s, (last - first) / 4), 2)
    return {"seconds": seconds,
            "first": latency_summary(m.latencies_ms[m.send_s < first + seconds]),
            "last": latency_summary(m.latencies_ms[m.send_s > last - seconds])}


def _step_result(rate: float, sent: list[Sent], received: Mapping[str, Received], rss: list[float],
                 cpu_percent: dict[str, float], span: float, settle_s: float = 0.0) -> dict[str, Any]:
    # every event sent counts for loss; the headline figures are the measured window's (a later event
    # of a user supersedes an earlier one, never the reverse, so matching the window alone is exact)
    whole = match(sent, received)
    measured, begins = split_settle(sent, settle_s)
    m = match(measured, received) if settle_s > 0 else whole
    answered = [(s, received[s.event_id]) for s in measured if s.event_id in received]
    to_emit = [r.event_to_emit_ms for _, r in answered if r.event_to_emit_ms is not None]
    out_hop = [(r.recv_s - s.send_s) * 1000 - r.event_to_emit_ms for s, r in answered if r.event_to_emit_ms is not None]
    settling = whole.latencies_ms[whole.send_s < begins]
    result: dict[str, Any] = {
        "rate": rate,
        "events": len(measured),  # the measured window's (the headline figures' events)
        "events_total": len(sent),  # settling included: what verify checks
        "triggering": m.triggering,
        "recommendations": m.answered,
        "covered": m.covered,
        "superseded": m.superseded,
        "lost": whole.lost,  # anywhere in the run, settling included
        **latency_summary(m.latencies_ms),
        "settle": {"seconds": settle_s, "events": len(sent) - len(measured), **latency_summary(settling)},
        "ends": ends(m),  # the measured window's first and last minute (a quarter of it when shorter)
        "achieved_rate": round(len(sent) / span, 1),
        "recommendations_per_s": round(whole.answered / span, 1),
        "send_span_s": round(span, 2),
        "worker_rss_mb": round(max(rss), 1) if rss else None,
        "worker_rss_final_mb": round(rss[-1], 1) if rss else None,
        "cpu_percent": cpu_percent,
        # where the time goes: send → emit inside the worker (producer linger, broker hop in,
        # queueing, processing), emit → received here (worker producer, broker hop out), ranking alone
        "breakdown": {
            "send_to_emit": latency_summary(to_emit),
            "emit_to_received": latency_summary(out_hop),
            "recommend_step": latency_summary([r.recommend_ms for _, r in answered if r.recommend_ms is not None]),
            # send → emit split: until the batch began (client linger, broker, Faust, batching, queueing),
            # the batch's own work before ranking (for the list's cause event)
            "ingest": latency_summary([r.ingest_ms for _, r in answered if r.ingest_ms is not None]),
            "update": latency_summary([r.update_ms for _, r in answered if r.update_ms is not None]),
        },
        "lost_sample": whole.lost_ids[:10],
        "measured_from_epoch_s": round(begins, 3),
    }
    result["_latencies"] = whole  # for the plot; removed before writing JSON
    return result


async def group_lag(settings: Settings) -> int | None:
    """The worker group's lag: records of its input topics (``clickstream`` and the item
    topic) past its committed offsets (so it trails by up to the commit interval);
    None while the broker cannot say (no group coordinator yet)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from streamrec.infra.kafka_clients import client_options, consumer

    admin = AIOKafkaAdminClient(**client_options(settings.broker))
    reader = consumer(settings.broker)
    await admin.start()
    await reader.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.worker.app_id)
        described = await admin.describe_topics([settings.topics.clickstream, settings.topics.by_item])
        parts = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        ends = await reader.end_offsets(parts)
    except KafkaError:
        return None
    else:
        return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in parts)
    finally:
        await reader.stop()
        await admin.close()


async def worker_gc_figures(settings: Settings) -> dict[str, Any]:
    """The worker's garbage collections over the run, from its snapshots on ``metrics``
    (stage ``gc_pause``, count ``gc_full``): a stalled event loop shows in every tail."""
    from streamrec.features.export import read_to_end
    from streamrec.infra.kafka_clients import consumer

    reader = consumer(settings.broker, settings.topics.metrics, auto_offset_reset="earliest")
    await reader.start()
    try:
        records = await read_to_end(reader)  # the worker still sends a snapshot every window
    finally:
        await reader.stop()
    collections = full = 0
    worst: list[float] = []
    for record in records:
        snap = json.loads(record.value)
        pause = snap["latency_ms"].get("gc_pause")
        full += snap["counts"].get("gc_full", 0)
        if pause:
            collections += pause["count"]
            worst.append(pause["max"])
    return {"collections": collections, "full_collections": full, "max_pause_ms": max(worst, default=None),
            "windows_with_pause_over_50ms": sum(w > 50 for w in worst), "windows": len(worst)}


def _broker_figures(session: BenchSession) -> dict[str, Any]:
    b, w = session.settings.broker, session.settings.worker
    return {
        "bootstrap_servers": b.bootstrap_servers, "fetch_max_wait_ms": b.fetch_max_wait_ms,
        "session_timeout_s": b.session_timeout_s, "rebalance_timeout_s": b.rebalance_timeout_s,
        "heartbeat_interval_s": b.heartbeat_interval_s, "partitions": b.partitions,
        "processing_guarantee": b.processing_guarantee, "producer_linger_ms": session.config.linger_ms,
        "bench_consumer_fetch_max_wait_ms": b.fetch_max_wait_ms,
        "worker_batch_max": w.batch_max, "worker_batch_within_ms": w.batch_within_ms,
    }


async def _drive(session: BenchSession) -> dict[str, Any]:
    from streamrec.features.verify import bench_check
    from streamrec.stream.topics import ensure_topics

    cfg = session.config
    await ensure_topics(session.settings)
    collector = Collector(session.settings)
    await collector.start()
    try:
        ready_s = await _warm_up(session, collector)
        ready_rss = session.rss_mb()
        idle = session.idle_cpu_percent = await _idle_cpu(session)
        print(f"[e2e] worker ready after {ready_s:.1f} s of warm-up, RSS {ready_rss:.0f} MB, idle cpu% {idle}", flush=True)
        steps: list[dict[str, Any]] = []
        rate: float | None = cfg.rate if not cfg.sweep else next_sweep_rate([], **cfg.sweep_search)
        start_row = 0
        while rate is not None and len(steps) < (cfg.sweep_steps if cfg.sweep else 1):
            result = await _run_step(session, collector, rate, len(steps), start_row)
            start_row += result["events_total"]
            result["ok"] = step_ok(result, cfg.p99_target_ms)
            steps.append(result)
            print(_format_step(result), flush=True)
            if cfg.sweep:
                rate = next_sweep_rate([(r["rate"], r["ok"]) for r in steps], **cfg.sweep_search)
                if rate is not None:
                    await _drain(collector)
        final_rss = session.rss_mb()
        duplicates = collector.duplicates
        gc_figures = await worker_gc_figures(session.settings)
        verified = await bench_check(session.settings)  # the worker's online features against clickstream
    finally:
        await collector.stop()
    report = _report(session, steps, ready_s=ready_s, ready_rss=ready_rss, final_rss=final_rss, duplicates=duplicates)
    report["verify"] = verified
    report["model_versions"] = sorted(collector.model_versions)
    report["idle_cpu_percent"] = idle
    report["worker_gc"] = gc_figures
    if session.timeline:
        report["timeline"] = session.timeline
    if cfg.sweep:
        report["sweep_converged"] = rate is None  # False: stopped by --sweep-steps before the bracket closed
    return report


async def _drain(collector: Collector, quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
    """Wait until no recommendation arrived for ``quiet_s`` (a backlog from an overloaded step is served)."""
    began, seen, last_change = time.monotonic(), len(collector.received), time.monotonic()
    while time.monotonic() - last_change < quiet_s and time.monotonic() - began < limit_s:
        await asyncio.sleep(0.2)
        if len(collector.received) != seen:
            seen, last_change = len(collector.received), time.monotonic()


def _report(session: BenchSession, steps: list[dict[str, Any]], *, ready_s: float, ready_rss: float, final_rss: float,
            duplicates: int) -> dict[str, Any]:
    cfg = session.config
    headline, best_rate = _best_step(steps) if cfg.sweep else (steps[0], None)
    report = {
        **{k: v for k, v in headline.items() if k != "ok"},
        "worker_rss_mb": round(max(session.rss_samples + [final_rss]), 1),
        "worker_rss_final_mb": round(final_rss, 1),
        "worker_rss_ready_mb": round(ready_rss, 1),
        "duration_s": cfg.duration_s,
        "source": cfg.source,
        "duplicates": duplicates,
        "worker_ready_s": round(ready_s, 1),
        "broker": _broker_figures(session),
        "stack": "embedded (own)" if session.stack_pids else "external",
        "started_at": session.started_at,
        "cpus": os.cpu_count(),
        "run_dir": str(session.run_dir),
        "worker_pid": session.worker.process.pid,
        "workers": len(session.workers),  # the worker_rss figures are their sum
    }
    if cfg.sweep:
        report.update(mode="sweep", p99_target_ms=cfg.p99_target_ms, best_rate=best_rate, steps=[dict(s) for s in steps])
    return report


def _best_step(steps: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], float | None]:
    """The sweep's headline step (the highest rate that held, else the first) and that rate."""
    good = [s for s in steps if s["ok"]]
    return (max(good, key=lambda s: s["rate"]), max(s["rate"] for s in good)) if good else (steps[0], None)


def _format_step(r: Mapping[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    return (f"[e2e] rate {r['rate']:>7g}/s  sent {r['events']:>6d} ({r['achieved_rate']:g}/s)  recs {r['recommendations']:>6d}  "
            f"lost {r['lost']}  covered {r.get('covered', 0)}  superseded {r['superseded']}  p50 {ms(r['p50_ms'])}  p95 {ms(r['p95_ms'])}  "
            f"p99 {ms(r['p99_ms'])} ms  worker RSS {r['worker_rss_mb']} MB  cpu% {r['cpu_percent']}"
            + ("" if "ok" not in r else f"  {'ok' if r['ok'] else 'FAIL'}")
            + (f"\n[e2e]   first {e['seconds']:g} s p50 {ms(e['first']['p50_ms'])} p99 {ms(e['first']['p99_ms'])} ms, "
               f"last {e['seconds']:g} s p50 {ms(e['last']['p50_ms'])} p99 {ms(e['last']['p99_ms'])} ms" if (e := r.get("ends")) else "")
            + (f"\n[e2e]   host: steal {h['steal_percent']}% of the cores, busy {h['busy_percent']}%, "
               f"probe p50 {h['probe_cpu_ms_p50']} ms CPU (max {h['probe_cpu_ms_max']}), a 1 ms sleep late by "
               f"p50 {h['wake_us_p50']} / p99 {h['wake_us_p99']} µs" if (h := r.get("host")) else "")
            + (f"\n[e2e]   settling, the first {settle['seconds']:g} s (not above): {settle['events']} events  "
               f"p50 {ms(settle['p50_ms'])}  p99 {ms(settle['p99_ms'])} ms" if (settle := r.get("settle")) and settle["events"] else ""))


# -- plots ---------------------------------------------------------------------------
def plot(report: Mapping[str, Any], steps_latencies: Sequence[tuple[float, Match]], path: Path) -> None:
    """Latency distribution and latency over time (one run), or percentiles by rate (sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    if report.get("mode") == "sweep":
        rates = [s["rate"] for s in report["steps"]]
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            left.plot(rates, [s[key] if s[key] is not None else np.nan for s in report["steps"]], "o-", label=key[:3])
        left.axhline(report["p99_target_ms"], color="red", ls="--", lw=1, label="p99 target")
        left.set(xlabel="offered rate (events/s)", ylabel="send → recommendation (ms)", yscale="log",
                 title=f"sweep: best rate {report['best_rate']} /s")
        left.legend()
        for rate, m in steps_latencies:
            if m.latencies_ms.size:
                right.plot(np.sort(m.latencies_ms), np.linspace(0, 1, m.latencies_ms.size), label=f"{rate:g}/s")
        right.set(xscale="log", xlabel="latency (ms)", ylabel="CDF", title="latency CDF per step")
        right.legend(fontsize=8)
    else:
        _, m = steps_latencies[0]
        begins = report.get("measured_from_epoch_s", -np.inf)
        measured = m.latencies_ms[m.send_s >= begins]
        if measured.size:
            lo, hi = max(measured.min(), 0.1), max(measured.max(), 1.0)
            left.hist(measured, bins=np.geomspace(lo, hi * 1.01, 60), color="tab:blue")
            for key, color in (("p50_ms", "green"), ("p95_ms", "orange"), ("p99_ms", "red")):
                left.axvline(report[key], color=color, ls="--", lw=1, label=f"{key[:3]} {report[key]:.1f} ms")
        if m.latencies_ms.size:
            t0 = m.send_s.min()
            settling = m.send_s < begins
            right.scatter(m.send_s[~settling] - t0, m.latencies_ms[~settling], s=2, alpha=0.5, label="measured")
            if settling.any():
                right.scatter(m.send_s[settling] - t0, m.latencies_ms[settling], s=2, alpha=0.5, color="tab:gray",
                              label=f"settling ({report['settle']['seconds']:g} s, not in the percentiles)")
                right.axvline(begins - t0, color="black", ls=":", lw=1)
                right.legend(fontsize=8, markerscale=4)
        left.set(xscale="log", xlabel="send → recommendation (ms)", ylabel="events",
                 title=f"{report['rate']:g} events/s for {report['duration_s']:g} s, lost {report['lost']}")
        left.legend()
        right.set(yscale="log", xlabel="send time (s since first event)", ylabel="latency (ms)", title="latency over the run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- entry points --------------------------------------------------------------------
def run_e2e(config: E2EConfig, base: Settings) -> dict[str, Any]:
    """Blocking: run the bench, write JSON (and a PNG beside it), return the report.

    Stops every process it started (stack, worker, producer) on return, error or Ctrl-C.
    """
    if config.sweep and config.sweep_fresh_stack and config.bootstrap_servers is None:
        return _write(_sweep_fresh(config, base), config.json_path)
    return _write(_session(config, base), config.json_path)


def _sweep_fresh(config: E2EConfig, base: Settings) -> dict[str, Any]:
    """The sweep with a fresh stack and worker per step: the embedded broker slows down as
    it accumulates record batches (``streamrec bench broker``), so on one long-lived
    broker each step would also measure the steps before it."""
    steps: list[dict[str, Any]] = []
    rate = next_sweep_rate([], **config.sweep_search)
    while rate is not None and len(steps) < config.sweep_steps:
        step = _session(config.model_copy(update={"rate": rate, "sweep": False}), base)
        step["ok"] = step_ok(step, config.p99_target_ms)
        steps.append(step)
        rate = next_sweep_rate([(r["rate"], r["ok"]) for r in steps], **config.sweep_search)
    headline, best_rate = _best_step(steps)
    report = {k: v for k, v in headline.items() if k not in ("ok", "_latencies")}
    report.update(mode="sweep", p99_target_ms=config.p99_target_ms, best_rate=best_rate,
                  steps=steps, sweep_converged=rate is None, sweep_fresh_stack=True,
                  worker_rss_mb=max(s["worker_rss_mb"] or 0.0 for s in steps))
    return report


def _session(config: E2EConfig, base: Settings) -> dict[str, Any]:
    """One stack (own or given), one worker, one run or a sweep on it; the report."""
    from streamrec.infra.stack import EmbeddedStack, StackConfig

    run_id = uuid.uuid4().hex[:8]
    run_dir = (config.json_path.parent / f"e2e-{run_id}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        worker_cores = _pin_bench(cleanup) if config.pin else ""
        stack_pids: dict[str, int] = {}
        if config.bootstrap_servers is None:
            stack = EmbeddedStack(StackConfig.on_free_ports(run_dir / "stack"))
            cleanup.callback(stack.down)
            stack_pids = {r.name: r.pid for r in stack.up()}
            bootstrap, redis_url = stack.config.bootstrap_servers, stack.config.redis_url
        else:
            bootstrap, redis_url = config.bootstrap_servers, config.redis_url or ""
        settings = bench_settings(base, bootstrap_servers=bootstrap, redis_url=redis_url, run_id=run_id,
                                  data_dir=run_dir / "worker", partitions=config.partitions)
        if worker_cores:
            settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"cpu_affinity": worker_cores})})
        workers = []
        for k in range(config.workers):  # the first as ever; more join its group with ids and data dirs of their own
            own = settings if k == 0 else worker_as(settings, k, run_dir / f"worker-{k}")
            own.worker.data_dir.mkdir(exist_ok=True)
            workers.append(WorkerProcess(own, run_dir / ("worker.log" if k == 0 else f"worker-{k}.log")))
            cleanup.callback(workers[-1].stop)
        children: list[subprocess.Popen[bytes]] = []
        cleanup.callback(_stop_all, children)  # runs first: producers before the workers before the stack
        print(f"[e2e] stack {bootstrap} / {redis_url}; worker pid {', '.join(str(w.process.pid) for w in workers)}, "
              f"log {workers[0].log}", flush=True)
        session = BenchSession(config, settings, workers, run_dir, run_id, stack_pids, children)
        return asyncio.run(_drive(session))


def _pin_bench(cleanup: ExitStack) -> str:
    """``--pin``: this process, and so what it starts from now on (the stack, the load
    generator), on every core it may use but the last; the last core, in
    ``STREAMREC_WORKER__CPU_AFFINITY``'s form, for the workers. Undone on ``cleanup``."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise BenchError(f"--pin needs two cores or more; this process may use {len(cores)}")
    cleanup.callback(os.sched_setaffinity, 0, set(cores))
    os.sched_setaffinity(0, set(cores[:-1]))
    return str(cores[-1])


def _write(report: dict[str, Any], path: Path) -> dict[str, Any]:
    if "steps" in report:
        report.pop("_latencies", None)  # the headline step's, kept with the step
        latencies = [(s["rate"], s.pop("_latencies")) for s in report["steps"]]
    else:
        latencies = [(report["rate"], report.pop("_latencies"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.with_suffix(".png")
    report["plot"] = str(png)
    path.write_text(json.dumps(report, indent=2))
    plot(report, latencies, png)
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per run or sweep step (default 60)")
    p.add_argument("--json", type=Path, default=Path("var/bench/e2e.json"), help="where to write the figures (a PNG goes beside it)")
    p.add_argument("--source", choices=("movielens", "clicks"), default="movielens",
                   help="MovieLens ratings in time order, or synthetic clicks/views over its catalogue")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait for outstanding recommendations")
    p.add_argument("--warmup-timeout", type=float, default=300.0, help="seconds the worker may take to answer a first event")
    p.add_argument("--settle", type=float, default=15.0,
                   help="seconds of load before the measured --duration, reported apart (default 15: a fresh "
                        "broker's JIT warm-up; 0 measures from the first event)")
    p.add_argument("--linger-ms", type=int, default=0,
                   help="the load generator's producer linger (default 0: at once, as the gateway sends events)")
    p.add_argument("--partitions", type=int, help="partitions of the bench's topics (default: the setting)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes in the bench's consumer group (default 1; the topics' partitions are split among them)")
    p.add_argument("--pin", action="store_true",
                   help="run the worker(s) on the last core, the stack, the load generator and the bench on the others")
    p.add_argument("--bootstrap", help="use this broker instead of starting a stack (needs --redis-url)")
    p.add_argument("--redis-url", help="use this Redis instead of starting a stack (needs --bootstrap)")
    p.add_argument("--sweep", action="store_true", help="find the highest rate with p99 <= --p99-target")
    p.add_argument("--p99-target", type=float, default=250.0, help="ms (sweep)")
    p.add_argument("--sweep-start", type=float, default=100.0)
    p.add_argument("--sweep-max-rate", type=float, default=4000.0)
    p.add_argument("--sweep-steps", type=int, default=7)
    p.add_argument("--sweep-one-stack", action="store_true",
                   help="reuse one stack and worker for every sweep step (default: a fresh one per step)")
    p.add_argument("--profile", action="store_true", help="record a py-spy flame graph of the worker per step")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from(args: argparse.Namespace) -> E2EConfig:
    return E2EConfig(rate=args.rate, duration_s=args.duration, json_path=args.json, source=args.source,
                     grace_s=args.grace, warmup_timeout_s=args.warmup_timeout, settle_s=args.settle, workers=args.workers,
                     pin=args.pin,
                     linger_ms=args.linger_ms, partitions=args.partitions,
                     bootstrap_servers=args.bootstrap, redis_url=args.redis_url, sweep=args.sweep,
                     p99_target_ms=args.p99_target, sweep_start=args.sweep_start,
                     sweep_max_rate=args.sweep_max_rate, sweep_steps=args.sweep_steps, profile=args.profile,
                     sweep_fresh_stack=not args.sweep_one_stack,
                     progress=not args.quiet)


def handle(args: argparse.Namespace) -> int:
    from streamrec.stream.settings import load_settings

    try:
        config = config_from(args)
    except ValidationError as exc:
        print(f"streamrec bench e2e: {exc.errors(include_url=False)[0]['msg']}", file=sys.stderr)
        return 2
    base = load_settings()
    try:
        with sigterm_as_interrupt():  # SIGTERM stops what the bench started, as Ctrl-C does
            report = run_e2e(config, base)
    except BenchError as exc:
        print(f"streamrec bench e2e: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[e2e] interrupted: stopped the producer, the worker and the stack it started", file=sys.stderr)
        return 130
    print(f"[e2e] wrote {config.json_path} and {report['plot']}")
    return 0 if verified_ok(report) else 1


def verified_ok(report: Mapping[str, Any]) -> bool:
    """Whether every run of the report (each sweep step on its own stack) passed ``verify``."""
    steps = report.get("steps", [])  # with one stack for the sweep, only the report has it
    return bool(report["verify"]["ok"]) and all(step.get("verify", {}).get("ok", True) for step in steps)


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Adds ``streamrec bench e2e``."""
    p = bench_subparsers.add_parser("e2e", help="event-send → recommendation-received latency through the real stack")
    add_arguments(p)
    p.set_defaults(func=handle)


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls."""
    register_bench(bench_subparsers)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m streamrec.tools.bench_e2e", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        sys.exit(handle(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
