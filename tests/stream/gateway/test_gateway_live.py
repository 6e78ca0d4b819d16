"""The gateway on the real stack: a real broker and redis-server (session fixtures), a
real worker process, ``streamrec gateway`` as a process, and headless Chromium.

The browser tests need Debian's ``chromium`` (``.ci/run`` installs it) and drive it with
Playwright's own driver (never a downloaded browser); each saves a screenshot of its page
under ``artifacts/screenshots`` (``STREAMREC_SCREENSHOT_DIR`` to change).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.features.messages import ClickEvent, Recommendation
from streamrec.infra.kafka_clients import consumer
from streamrec.stream.gateway.app import create_app
from streamrec.stream.settings import Settings
from tests.stream.conftest import RunningWorker
from streamrec.tools.gateway_client import SseClient, click, post_event, wait_until_serving
from streamrec.stream.gateway.server import GatewayProcess
from tests.stream.gateway.conftest import client_session, serve, small_catalogue, start_gateway, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("STREAMREC_SCREENSHOT_DIR", "artifacts/screenshots"))


def run_async(coro: Any) -> Any:
    """``asyncio.run`` in a thread of its own: Playwright's sync API keeps a loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def gateway(worker: RunningWorker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("gateway")
    settings = worker.settings.model_copy(update={"gateway": worker.settings.gateway.model_copy(update={
        "data_dir": data_dir, "group_id": f"gateway-{uuid.uuid4().hex[:8]}", "stats_interval_s": 1.0})})
    process = start_gateway(settings, data_dir / "gateway.log")

    def alive() -> None:
        assert worker.process.poll() is None, f"the worker died:\n{worker.log_tail()}"
        assert process.process.poll() is None, f"the gateway died:\n{process.log_tail()}"

    async def warm_up() -> None:
        async with client_session() as http:
            await wait_until_serving(http, process.base_url, alive=alive)

    try:
        run_async(warm_up())
        yield process
    finally:
        process.stop()


def test_a_posted_event_comes_back_as_its_list_on_that_users_stream_only(gateway: GatewayProcess) -> None:
    async def run() -> None:
        async with client_session() as http:
            base = gateway.base_url
            mine = [SseClient(http, f"{base}/streams/users/alice") for _ in range(3)]
            other = SseClient(http, f"{base}/streams/users/bob")
            for c in [*mine, other]:
                await c.opened.wait()
            sent = await post_event(http, base, click("alice", "356"))
            for c in mine:
                rec = await c.list_for(sent["event_id"], 10)
                assert rec is not None and rec["user_id"] == "alice" and rec["items"], gateway.log_tail()
            await asyncio.sleep(0.3)
            assert not [m for m in other.received if m.event == "recommendation"]
            # a page load now shows that list: from the cache, counted as a hit
            async with http.get(f"{base}/users/alice/recommendations") as resp:
                assert resp.status == 200
                cached = Recommendation.model_validate(await resp.json())
                assert sent["event_id"] in [cached.cause_event_id, *cached.covers]
            async with http.get(f"{base}/users/nobody-{uuid.uuid4().hex}/recommendations") as resp:
                assert resp.status == 404
            async with http.get(f"{base}/stats") as resp:
                stats = await resp.json()
                assert stats["cache_hits"] >= 1 and stats["cache_misses"] >= 1
            for c in [*mine, other]:
                await c.close()

    run_async(run())


def test_posted_events_are_on_clickstream_keyed_by_user(gateway: GatewayProcess) -> None:
    s: Settings = gateway.settings

    async def run() -> None:
        async with client_session() as http:
            body = click("carol", "318", type="rating", rating=4.5)
            sent = await post_event(http, gateway.base_url, body)
        from aiokafka import TopicPartition

        reader = consumer(s.broker)
        await reader.start()
        try:
            tp = TopicPartition(s.topics.clickstream, sent["partition"])
            reader.assign([tp])
            reader.seek(tp, sent["offset"])
            records = (await reader.getmany(tp, timeout_ms=10_000))[tp]
        finally:
            await reader.stop()
        assert records[0].key == b"carol"
        stored = ClickEvent.model_validate_json(records[0].value)
        assert (stored.event_id, stored.type, stored.rating) == (body["event_id"], "rating", 4.5)

    run_async(run())


def test_healthz_ok_and_metrics_arrive(gateway: GatewayProcess, worker: RunningWorker) -> None:
    async def run() -> None:
        async with client_session() as http:
            async with http.get(f"{gateway.base_url}/healthz") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["broker"]["ok"] and body["redis"]["ok"], body
            monitor = SseClient(http, f"{gateway.base_url}/streams/metrics")
            assert await wait_until(lambda: any(m.event == "metrics" and json.loads(m.data)["worker_id"] == worker.settings.worker.id
                                                for m in monitor.received), 15)
            await monitor.close()

    run_async(run())


async def test_healthz_names_redis_when_it_is_down(bootstrap_servers: str, tmp_path: Path) -> None:
    from streamrec.stream.settings import load_settings

    settings = load_settings(broker={"bootstrap_servers": bootstrap_servers}, redis={"url": "redis://127.0.0.1:1/0"},
                             gateway={"data_dir": str(tmp_path), "group_id": f"gw-{uuid.uuid4().hex[:8]}"},
                             topics={"recommendations": f"hz-{uuid.uuid4().hex[:6]}.recommendations",
                                     "metrics": f"hz-{uuid.uuid4().hex[:6]}.metrics"})
    app = create_app(settings, small_catalogue())
    async with serve(settings, app) as base, client_session() as http:
        async with http.get(f"{base}/healthz") as resp:
            body = await resp.json()
        assert resp.status == 503 and body["status"] == "unavailable"
        assert body["broker"]["ok"] is True
        assert body["redis"]["ok"] is False and body["redis"]["error"]


# -- in a browser ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, base: str) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})  # a fresh profile each time
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    return context, page, requests


def test_shopper_page_shows_the_list_caused_by_a_click_within_2s(browser: Any, gateway: GatewayProcess) -> None:
    base = gateway.base_url
    user = f"shopper-{uuid.uuid4().hex[:6]}"
    context, page, requests = _page(browser, base)
    try:
        page.goto(f"{base}/shop?user={user}")
        page.wait_for_selector("body[data-ready='1']")
        assert page.inner_text("#user-id") == user
        cards = page.locator("#items article.item")
        assert cards.count() >= 12 and cards.nth(0).locator("h3").inner_text() == "Forrest Gump"  # MovieLens' most rated
        cause_of = "(id) => { const p = document.querySelector('#recs-panel'); return p.dataset.causeEventId === id || p.dataset.covers.split(' ').includes(id); }"
        # a first list, so that the panel already shows one before the click under test
        cards.nth(1).locator("button[data-action=view]").click()
        first = page.evaluate("document.body.dataset.lastEventId")
        page.wait_for_function(cause_of, arg=first, timeout=10_000)
        before = page.evaluate("document.querySelector('#recs-panel').dataset.causeEventId")
        assert page.locator("#recs li").count() > 0

        cards.nth(2).locator("button[data-action=click]").click()
        clicked = page.evaluate("document.body.dataset.lastEventId")
        assert clicked != first
        began = time.monotonic()
        page.wait_for_function(cause_of, arg=clicked, timeout=2_000)
        waited = time.monotonic() - began
        panel = page.evaluate("(() => { const p = document.querySelector('#recs-panel'); return {...p.dataset}; })()")
        assert panel["causeEventId"] != before, "the panel still shows the list from before the click"
        assert page.locator("#recs li").count() > 0 and waited < 2.0
        latency_ms = float(panel["latencyMs"])
        assert 0 < latency_ms < 2000 and page.inner_text("#latency-n") == "2"
        for n in range(3, 8):  # a few more, for the screenshot's latency figures
            cards.nth(n).locator("button[data-action=add_to_cart]" if n % 2 else "button[data-action=click]").click()
            last = page.evaluate("document.body.dataset.lastEventId")
            page.wait_for_function(cause_of, arg=last, timeout=5_000)
        page.wait_for_function("() => !document.querySelector('#recs li .title').textContent.startsWith('item ')", timeout=5_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "shop.png"), full_page=False)
        outside = [u for u in requests if not u.startswith(base)]
        assert not outside, f"the page loaded from elsewhere: {outside}"
    finally:
        context.close()


# 60 clicks of 8 users over ~3 s, then a page load for each of them; returns when it began (epoch s)
BURST = """async () => {
  const began = Date.now() / 1000;
  const items = ["1", "32", "50", "110", "260", "296", "318", "356"];
  for (let i = 0; i < 60; i++) {
    await fetch("/events", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ event_id: `burst-${crypto.randomUUID()}`, user_id: `burst-${i % 8}`, item_id: items[i % 8],
                             type: "click", ts: Date.now() / 1000 }) });
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < 8; i++) await fetch(`/users/burst-${i}/recommendations`);
  return began;
}"""


def test_monitoring_page_charts_the_live_metric_stream(browser: Any, gateway: GatewayProcess, worker: RunningWorker) -> None:
    base = gateway.base_url
    worker_id = worker.settings.worker.id
    context, page, requests = _page(browser, base)
    try:
        page.goto(f"{base}/monitor")
        page.wait_for_function(
            "(id) => window.monitor && window.monitor.snapshots.some((r) => r.snap.worker_id === id)"
            " && Number(document.getElementById('chart-rate').dataset.points) > 0", arg=worker_id, timeout=20_000)
        assert page.locator("#chart-rate canvas").count() == 1 and page.locator("#chart-latency canvas").count() == 1
        points = page.evaluate("Number(document.getElementById('chart-latency').dataset.points)")
        assert points > 0
        row = page.locator(f"#workers tbody tr[data-worker='{worker_id}']")
        assert row.count() == 1 and "none" not in row.locator("td").nth(1).inner_text()
        # new points keep coming from the stream (one per worker window), not only the history
        page.wait_for_function("(n) => Number(document.getElementById('chart-latency').dataset.points) > n",
                               arg=points, timeout=10_000)
        page.wait_for_function("() => window.monitor.gateway.length >= 2", timeout=10_000)
        # traffic from this page: the throughput chart must show it in a window after it began
        began = page.evaluate(BURST)
        page.wait_for_function(
            "(t) => { const p = window.monitor.plots.get('chart-rate'); if (!p) return false;"
            " const [xs, perSecond] = p.plot.data; return xs.some((x, i) => x >= t && perSecond[i] > 1); }",
            arg=began, timeout=15_000)
        # the page loads of the burst reach the cache hit rate chart through the gateway's figures
        page.wait_for_function("() => window.monitor.gateway.some((g) => g.cache_hits + g.cache_misses >= 8)", timeout=10_000)
        page.wait_for_function("() => Number(document.getElementById('chart-rate').dataset.points) >= 8", timeout=15_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "monitor.png"), full_page=True)
        outside = [u for u in requests if not u.startswith(base)]
        assert not outside, f"the page loaded from elsewhere: {outside}"
        # the API docs too are served from here alone
        requests.clear()
        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=10_000)
        assert not [u for u in requests if not u.startswith(base)]
    finally:
        context.close()
