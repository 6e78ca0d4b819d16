"""``streamrec bench gateway``: many live streams on one gateway, and click → list in a browser.

One run: start an embedded stack on free ports (or use the broker and Redis given), one
worker and one gateway (``streamrec gateway``, its own process), each with topics and
names of its own; wait until a clicked event comes back as a list; open ``--clients``
Server-Sent Events streams (one user each, plus ``--monitors`` monitoring streams) from
this process; then for ``--duration`` seconds post events through the gateway at
``--rate`` to those users while, when Debian's chromium is there, a headless browser on
the shopper page clicks an item every ``--click-every`` seconds and measures, in the
page, the time from the click to its list shown.

Figures: per posted event, POST sent → its list received on its user's stream (``p50_ms``...);
the browser's click → list shown (``browser_p50_ms``...); the gateway's RSS (``gateway_rss_mb``,
the maximum while streams are open) and CPU; streams dropped; events never answered
(``lost``). Printed, and written as JSON. Everything it starts it stops, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from streamrec.stream.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TARGET_P50_MS = 50.0
TARGET_RSS_MB = 150.0


class GatewayBench:
    def __init__(self, args: argparse.Namespace, base_url: str, gateway_pid: int, worker_alive: Any) -> None:
        self.args = args
        self.base = base_url
        self.gateway = psutil.Process(gateway_pid)
        self.worker_alive = worker_alive
        self.sent: dict[str, float] = {}
        self.posted: dict[str, float] = {}  # event_id -> ms the POST took (the broker's ack included)
        self.arrived: dict[str, float] = {}
        self.emit_ms: dict[str, tuple[float, float]] = {}  # cause -> (event → emit in the worker, emit → here) ms
        self.rss: list[float] = []
        self.browser_latencies: list[float] = []
        self.browser_note: str | None = None
        self.browser_timings: dict[str, list[float]] = {}

    def on_message(self, message: Any) -> None:
        if message.event != "recommendation":
            return
        now, wall = time.perf_counter(), time.time()
        rec = orjson.loads(message.data)
        for event_id in (rec["cause_event_id"], *rec.get("covers", ())):
            self.arrived.setdefault(event_id, now)
        emitted = datetime.fromisoformat(rec["emitted_at"]).timestamp()
        self.emit_ms[rec["cause_event_id"]] = (rec["latency_ms"]["event_to_emit"] or 0.0, (wall - emitted) * 1000)

    async def run(self) -> dict[str, Any]:
        from streamrec.tools.gateway_client import SseClient, session, wait_until_serving

        a = self.args
        async with session() as http:
            ready_s = await wait_until_serving(http, self.base, alive=self.worker_alive)
            rss_ready = self.gateway.memory_info().rss / 2**20
            users = [f"bench-u{n}" for n in range(a.clients)]
            streams = [SseClient(http, f"{self.base}/streams/users/{u}", self.on_message) for u in users]
            streams += [SseClient(http, f"{self.base}/streams/metrics") for _ in range(a.monitors)]
            for s in streams:
                await s.opened.wait()
            open_streams = sum(1 for s in streams if s.status == 200 and not s.closed)
            print(f"[gateway] ready in {ready_s:.1f} s; {open_streams} streams open; gateway RSS {rss_ready:.0f} MB", flush=True)
            sampler = asyncio.create_task(self._sample())
            self.gateway.cpu_percent()
            browser = asyncio.create_task(self._browser()) if a.click_every > 0 else None
            await self._post_load(http, users)
            if browser is not None:
                await browser
            await asyncio.sleep(a.grace)
            cpu = self.gateway.cpu_percent()
            sampler.cancel()
            async with http.get(f"{self.base}/stats") as resp:
                stats = await resp.json()
            for s in streams:
                await s.close()
        return self._report(ready_s, rss_ready, open_streams, cpu, stats)

    async def _sample(self) -> None:
        while True:
            self.rss.append(self.gateway.memory_info().rss / 2**20)
            await asyncio.sleep(0.25)

    async def _post_load(self, http: Any, users: list[str]) -> None:
        from streamrec.tools.gateway_client import click, post_event

        a = self.args
        rng = random.Random(7)
        items = [str(i) for i in (1, 32, 50, 110, 150, 260, 296, 318, 356, 480, 527, 589, 593, 1196, 2571, 2858)]
        pending: set[asyncio.Task[Any]] = set()

        async def one(user: str) -> None:
            event = click(user, rng.choice(items))
            began = self.sent[event["event_id"]] = time.perf_counter()
            await post_event(http, self.base, event)
            self.posted[event["event_id"]] = (time.perf_counter() - began) * 1000

        began = time.perf_counter()
        n = 0
        while time.perf_counter() - began < a.duration:
            delay = began + n / a.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(users[n % len(users)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
            if n % max(1, int(a.rate)) == 0:
                self.worker_alive()
        if pending:
            await asyncio.gather(*pending)

    async def _browser(self) -> None:
        """A shopper page clicking items; the latencies the page measured itself."""
        if not CHROMIUM.exists():
            self.browser_note = "no /usr/bin/chromium: browser figures skipped (apt-get install chromium)"
            return
        from playwright.async_api import async_playwright

        a = self.args
        cause_of = ("(id) => { const p = document.querySelector('#recs-panel'); "
                    "return p.dataset.causeEventId === id || p.dataset.covers.split(' ').includes(id); }")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(f"{self.base}/shop?user=bench-browser-{uuid.uuid4().hex[:6]}")
                await page.wait_for_selector("body[data-ready='1']")
                cards = page.locator("#items article.item button[data-action=click]")
                began = time.perf_counter()
                n = 0
                while time.perf_counter() - began < a.duration - 1:
                    await cards.nth(n % 24).click()
                    clicked = await page.evaluate("document.body.dataset.lastEventId")
                    try:
                        await page.wait_for_function(cause_of, arg=clicked, timeout=5_000)
                    except Exception:  # noqa: BLE001 - counted as unanswered below
                        pass
                    n += 1
                    await asyncio.sleep(a.click_every)
                self.browser_latencies = list(await page.evaluate("window.streamrec.latencies"))
                timings = await page.evaluate(
                    "window.streamrec.timings.map((t) => ({...t, post: window.streamrec.posted.get(t.id) ?? null}))")
                self.browser_timings = {
                    "post": [t["post"] for t in timings if t["post"] is not None],
                    "arrived": [t["arrived"] for t in timings],
                    "render": [t["shown"] - t["arrived"] for t in timings],
                }
                self.browser_clicks = n
            finally:
                await browser.close()

    def _report(self, ready_s: float, rss_ready: float, open_streams: int, cpu: float, stats: dict[str, Any]) -> dict[str, Any]:
        from streamrec.tools.bench_e2e import latency_summary

        a = self.args
        latencies = [(self.arrived[i] - t) * 1000 for i, t in self.sent.items() if i in self.arrived]
        browser = latency_summary(self.browser_latencies, "browser_")
        report: dict[str, Any] = {
            "clients": a.clients, "monitors": a.monitors, "streams_open": open_streams,
            "rate": a.rate, "duration_s": a.duration, "ready_s": round(ready_s, 1),
            "events": len(self.sent), "answered": len(latencies), "lost": len(self.sent) - len(latencies),
            **latency_summary(latencies),
            # where the time goes (wall clocks of one machine): the POST with the broker's ack, event → emit inside
            # the worker (from the event's ts), emit → received here (the recommendations hop and the gateway)
            "breakdown": {**latency_summary(list(self.posted.values()), "post_"),
                          **latency_summary([v[0] for i, v in self.emit_ms.items() if i in self.sent], "event_to_emit_"),
                          **latency_summary([v[1] for i, v in self.emit_ms.items() if i in self.sent], "emit_to_stream_")},
            "browser_clicks": getattr(self, "browser_clicks", 0), "browser_lists": len(self.browser_latencies), **browser,
            "browser_note": self.browser_note,
            # in the page (p50): click → POST answered, click → the list's message arrived, arrived → shown
            "browser_breakdown": {k: latency_summary(v, f"{k}_")[f"{k}_p50_ms"] for k, v in self.browser_timings.items()},
            "gateway_rss_mb": round(max(self.rss, default=rss_ready), 1), "gateway_rss_mb_ready": round(rss_ready, 1),
            "gateway_cpu_percent": round(cpu, 1),
            "streams_dropped": stats.get("streams_dropped", 0),
            "targets": {"browser_p50_ms": TARGET_P50_MS, "gateway_rss_mb": TARGET_RSS_MB},
        }
        p50 = report["browser_p50_ms"] if report["browser_p50_ms"] is not None else report["p50_ms"]
        report["targets_met"] = bool(p50 is not None and p50 <= TARGET_P50_MS and report["gateway_rss_mb"] <= TARGET_RSS_MB
                                     and open_streams == a.clients + a.monitors and report["streams_dropped"] == 0)
        return report


def _settings(base: Settings, args: argparse.Namespace, run_dir: Path, bootstrap: str, redis_url: str) -> Settings:
    from streamrec.tools.bench_e2e import bench_settings

    run_id = run_dir.name.removeprefix("gateway-")
    settings = bench_settings(base, bootstrap_servers=bootstrap, redis_url=redis_url, run_id=run_id,
                              data_dir=run_dir / "worker", partitions=None)
    gateway = settings.gateway.model_copy(update={"port": 0, "host": "127.0.0.1", "group_id": f"bench-gateway-{run_id}",
                                                  "data_dir": run_dir / "gateway"})
    return settings.model_copy(update={"gateway": gateway})


def run(args: argparse.Namespace, base: Settings) -> dict[str, Any]:
    from streamrec.infra.stack import EmbeddedStack, StackConfig
    from streamrec.tools.bench_e2e import WorkerProcess
    from streamrec.stream.gateway.server import spawn_gateway

    run_dir = (args.json.parent / f"gateway-{uuid.uuid4().hex[:8]}").resolve()
    (run_dir / "worker").mkdir(parents=True)
    (run_dir / "gateway").mkdir()
    with ExitStack() as cleanup:
        if args.bootstrap is None:
            stack = EmbeddedStack(StackConfig.on_free_ports(run_dir / "stack"))
            cleanup.callback(stack.down)
            stack.up()
            bootstrap, redis_url = stack.config.bootstrap_servers, stack.config.redis_url
        else:
            bootstrap, redis_url = args.bootstrap, args.redis_url
        settings = _settings(base, args, run_dir, bootstrap, redis_url)
        worker = WorkerProcess(settings, run_dir / "worker.log")
        cleanup.callback(worker.stop)
        gateway = spawn_gateway(settings, run_dir / "gateway.log")
        cleanup.callback(gateway.stop)
        print(f"[gateway] stack {bootstrap} / {redis_url}; worker pid {worker.process.pid}; gateway {gateway.base_url} "
              f"(pid {gateway.process.pid}); logs in {run_dir}", flush=True)
        report = asyncio.run(GatewayBench(args, gateway.base_url, gateway.process.pid, worker.check_alive).run())
        report["worker_rss_mb"] = round(worker.rss_mb(), 1)
    report["run_dir"] = str(run_dir)
    return report


def _print(report: dict[str, Any]) -> None:
    def ms(key: str) -> str:
        value = report.get(key)
        return "–" if value is None else f"{value:.1f}"

    print(f"[gateway] {report['streams_open']} streams ({report['clients']} users + {report['monitors']} monitors), "
          f"{report['events']} events at {report['rate']:g}/s over {report['duration_s']:g} s, {report['lost']} without a list, "
          f"{report['streams_dropped']} streams dropped")
    print(f"[gateway] POST → list on the user's stream: p50 {ms('p50_ms')} / p95 {ms('p95_ms')} / p99 {ms('p99_ms')} ms")
    b = report["breakdown"]
    print(f"[gateway]   of which (p50): POST + broker ack {b['post_p50_ms']} ms, event → emit in the worker "
          f"{b['event_to_emit_p50_ms']} ms, emit → stream {b['emit_to_stream_p50_ms']} ms")
    if report["browser_lists"]:
        print(f"[gateway] browser click → list shown: p50 {ms('browser_p50_ms')} / p95 {ms('browser_p95_ms')} / "
              f"max {ms('browser_max_ms')} ms over {report['browser_lists']} lists ({report['browser_clicks']} clicks)")
        bb = report["browser_breakdown"]
        print(f"[gateway]   in the page (p50): click → POST answered {bb.get('post')} ms, click → list arrived "
              f"{bb.get('arrived')} ms, arrived → shown {bb.get('render')} ms")
    elif report["browser_note"]:
        print(f"[gateway] {report['browser_note']}")
    print(f"[gateway] gateway RSS max {report['gateway_rss_mb']:.0f} MB (ready {report['gateway_rss_mb_ready']:.0f} MB), "
          f"CPU {report['gateway_cpu_percent']:.0f}% of a core; targets (p50 ≤ {TARGET_P50_MS:g} ms, RSS ≤ {TARGET_RSS_MB:g} MB) "
          f"{'met' if report['targets_met'] else 'NOT met'}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=200, help="user streams to open (default 200)")
    p.add_argument("--monitors", type=int, default=0, help="monitoring streams to open besides (default 0)")
    p.add_argument("--rate", type=float, default=20.0, help="events per second posted through the gateway (default 20)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--click-every", type=float, default=0.25,
                   help="seconds between the browser's clicks (after each list); 0 = no browser")
    p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for outstanding lists")
    p.add_argument("--json", type=Path, default=Path("var/bench/gateway.json"), help="where to write the figures")
    p.add_argument("--bootstrap", help="use this broker instead of starting a stack (needs --redis-url)")
    p.add_argument("--redis-url", help="use this Redis instead of starting a stack (needs --bootstrap)")


def handle(args: argparse.Namespace) -> int:
    from streamrec.tools.bench_e2e import BenchError
    from streamrec.stream.settings import load_settings

    if (args.bootstrap is None) != (args.redis_url is None):
        print("streamrec bench gateway: --bootstrap and --redis-url go together", file=sys.stderr)
        return 2
    if args.clients < 1 or args.rate <= 0 or args.duration <= 0:
        print("streamrec bench gateway: --clients, --rate and --duration must be positive", file=sys.stderr)
        return 2
    try:
        report = run(args, load_settings())
    except (BenchError, RuntimeError, TimeoutError) as exc:
        print(f"streamrec bench gateway: {exc}", file=sys.stderr)
        return 1
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    _print(report)
    print(f"[gateway] wrote {args.json}")
    return 0


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls: ``streamrec bench gateway``."""
    p = bench_subparsers.add_parser("gateway", help="live streams on one gateway; click → list in a browser")
    add_arguments(p)
    p.set_defaults(func=handle)
