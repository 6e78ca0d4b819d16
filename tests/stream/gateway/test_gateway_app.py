"""The gateway's HTTP side without a broker: streams fed straight into the hub, bodies
refused as the worker refuses them, reads, health, pages and settings."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamrec.features.messages import Recommendation, RecommendedItem, StageLatency
from streamrec.infra.settings import SettingsError
from streamrec.stream.gateway.app import create_app
from streamrec.stream.gateway.catalogue import Catalogue, load_catalogue
from streamrec.tools.gateway_client import SseClient
from streamrec.stream.gateway.sse import messages
from streamrec.stream.settings import load_settings
from tests.stream.gateway.conftest import client_session, offline_settings, serve, wait_until


def rec(user: str, cause: str) -> bytes:
    now = datetime.now(timezone.utc)
    return Recommendation(user_id=user, items=[RecommendedItem(item_id="i1", score=0.5, source="popular")],
                          model_version="m1", cause_event_id=cause, event_ts=now, emitted_at=now,
                          latency_ms=StageLatency(), worker_id="w").to_bytes()


async def test_one_hub_serves_many_streams_each_user_only_their_lists(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path, stats_interval_s=3600)
    app = create_app(settings, catalogue, connect=False)
    hub = app.state.gateway.hub
    users = [f"u{n}" for n in range(10)]
    async with serve(settings, app) as base, client_session() as http:
        streams = {u: [SseClient(http, f"{base}/streams/users/{u}") for _ in range(12)] for u in users}
        monitors = [SseClient(http, f"{base}/streams/metrics") for _ in range(5)]
        assert await wait_until(lambda: hub.clients == 125, 10), hub.stats()
        topic = settings.topics.recommendations
        for n in range(5):
            for u in users:
                hub.dispatch(topic, u.encode(), rec(u, f"{u}-e{n}"))
        hub.dispatch(settings.topics.metrics, b"w", b'{"worker_id":"w"}')
        for u, clients in streams.items():
            for client in clients:
                got = [m for m in await client.wait_for(5) if m.event == "recommendation"]
                assert [json.loads(m.data)["cause_event_id"] for m in got] == [f"{u}-e{n}" for n in range(5)]
        for monitor in monitors:
            assert [m.event for m in await monitor.wait_for(1)][:1] == ["metrics"]
        await asyncio.sleep(0.1)  # nothing else arrives: each stream got its own user's lists only
        assert all(len(c.received) == 5 for cs in streams.values() for c in cs)
        assert hub.counts["frames_out"] == 10 * 12 * 5 + 5
        for client in [*monitors, *(c for cs in streams.values() for c in cs)]:
            await client.close()
        assert await wait_until(lambda: hub.clients == 0, 5)


async def test_a_browser_that_does_not_read_is_dropped_and_the_others_are_served(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path, client_buffer=8)
    app = create_app(settings, catalogue, connect=False)
    hub = app.state.gateway.hub
    async with serve(settings, app) as base, client_session() as http:
        host, port = base.removeprefix("http://").split(":")
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and it never reads
        stuck.connect((host, int(port)))
        stuck.sendall(b"GET /streams/users/u HTTP/1.1\r\nHost: x\r\n\r\n")
        fast = SseClient(http, f"{base}/streams/users/u")
        assert await wait_until(lambda: hub.clients == 2, 5)
        big = b'{"pad":"' + b"x" * 65_536 + b'"}'
        began = time.perf_counter()
        longest = 0.0
        for _ in range(300):  # ~20 MB: more than the kernel buffers and the stream's own
            t = time.perf_counter()
            hub.dispatch(settings.topics.recommendations, b"u", big)
            longest = max(longest, time.perf_counter() - t)
            await asyncio.sleep(0.002)  # the fast reader keeps up
            if hub.counts["streams_dropped"]:
                break
        assert hub.counts["streams_dropped"] == 1, hub.stats()
        assert longest < 0.05, f"a dispatch took {longest * 1000:.1f} ms: the hub waited on a browser"
        sent = hub.counts["recommendations_in"]
        assert len(await fast.wait_for(sent, 10)) == sent and not fast.closed
        # the stuck connection was aborted: reading what reached it ends in EOF or a reset, not a time-out
        stuck.settimeout(5)
        try:
            while stuck.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        stuck.close()
        assert hub.clients == 1
        await fast.close()
    assert time.perf_counter() - began < 60


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "ts": time.time(), **fields}


BAD_BODIES: list[tuple[bytes, int, str, str | None]] = [
    (b"{broken", 422, "invalid_json", None),
    (b'"a string"', 422, "not_an_object", None),
    (json.dumps({k: v for k, v in event().items() if k != "event_id"}).encode(), 422, "missing_field", "event_id"),
    (json.dumps(event(colour="red")).encode(), 422, "unknown_field", "colour"),
    (json.dumps(event(type="rating", rating=7)).encode(), 422, "invalid_field", "rating"),
    (json.dumps(event(type="teleport")).encode(), 422, "invalid_field", "type"),
    (json.dumps(event(user_id=True)).encode(), 422, "invalid_field", "user_id"),
    (json.dumps(event(type="view", rating=3)).encode(), 422, "inconsistent_fields", None),
    (b"\xff\xfe", 422, "invalid_encoding", None),
    (json.dumps(event(item_id="x" * 5000)).encode(), 413, "payload_too_large", None),
]


async def test_post_events_refuses_bad_bodies_naming_the_field(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        for body, status, reason, field in BAD_BODIES:
            async with http.post(f"{base}/events", data=body, headers={"content-type": "application/json"}) as resp:
                detail = (await resp.json())["detail"][0]
                assert (resp.status, detail["type"], detail["field"]) == (status, reason, field), body[:80]
                if field:
                    assert detail["loc"] == ["body", field]
        # a body that grows past the limit without announcing its length is cut off too
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b" " * 1024
        async with http.post(f"{base}/events", data=chunks()) as resp:
            assert resp.status == 413
        # a valid event passes validation (and, with no broker here, is not taken)
        async with http.post(f"{base}/events", json=event()) as resp:
            assert resp.status == 503
        assert app.state.gateway.counts["events_rejected"] == len(BAD_BODIES) + 1


async def test_healthz_and_reads_say_when_redis_is_down(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path)  # Redis on port 1: nothing listens
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        async with http.get(f"{base}/healthz") as resp:
            body = await resp.json()
            assert resp.status == 503 and body["status"] == "unavailable"
            assert body["redis"]["ok"] is False and body["redis"]["error"]
        async with http.get(f"{base}/users/u1/recommendations") as resp:
            assert resp.status == 503 and "Redis" in (await resp.json())["detail"]


async def test_items_catalogue_pages_docs_and_metrics(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        async def get(path: str) -> Any:
            async with http.get(base + path) as resp:
                assert resp.status == 200, path
                return await (resp.json() if "json" in resp.content_type else resp.text())

        page = await get("/items?limit=3")
        assert page["total"] == 20 and [i["item_id"] for i in page["items"]] == ["i0", "i1", "i2"]
        assert [i["item_id"] for i in (await get("/items?ids=i5,nope,i3"))["items"]] == ["i5", "i3"]
        comedies = await get("/items?genre=Comedy&limit=200")
        assert comedies["total"] == 10 and all("Comedy" in i["genres"] for i in comedies["items"])
        assert (await get("/items?q=NUMBER%2012"))["items"][0]["title"] == "Film number 12"
        info = await get("/catalogue")
        assert info["users"] == ["u1", "u2"] and info["genres"] == ["Comedy", "Drama"]
        spec = await get("/openapi.json")
        body_schema = spec["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body_schema["required"]) >= {"event_id", "user_id", "type", "ts"}
        assert "click" in json.dumps(body_schema["properties"]["type"])
        for path in ("/streams/users/{user_id}", "/users/{user_id}/recommendations", "/items", "/healthz"):
            assert path in spec["paths"]
        docs = await get("/docs")
        assert not re.findall(r"""(?:src|href)=["']https?://""", docs), "the docs page loads something from elsewhere"
        for path in ("/shop", "/monitor", "/static/shop.js", "/static/monitor.js", "/static/style.css",
                     "/vendor/uplot/uPlot.iife.min.js", "/vendor/uplot/uPlot.min.css",
                     "/vendor/swagger-ui/swagger-ui-bundle.js"):
            await get(path)
        for page_path in ("/shop", "/monitor"):
            html = await get(page_path)
            assert not re.findall(r"""(?:src|href)=["']https?://""", html)
        text = await get("/metrics")
        assert "streamrec_gateway_clients" in text and "streamrec_gateway_cache_requests_total" in text
        stats = await get("/stats")
        assert stats["clients"] == 0 and stats["cache_hit_rate"] is None


async def test_monitoring_streams_get_the_gateways_figures(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        async with http.get(f"{base}/streams/metrics") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for message in messages(resp.content):
                if message.event == "gateway":
                    figures = json.loads(message.data)
                    assert figures["monitor_streams"] == 1 and figures["rss_bytes"] > 0
                    break


async def test_streams_beyond_max_clients_get_503(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path, max_clients=2)
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        clients = [SseClient(http, f"{base}/streams/users/u{n}") for n in range(2)]
        assert await wait_until(lambda: app.state.gateway.hub.clients == 2)
        async with http.get(f"{base}/streams/users/third") as resp:
            assert resp.status == 503 and "STREAMREC_GATEWAY__MAX_CLIENTS" in (await resp.json())["detail"]
        for c in clients:
            await c.close()


def test_bad_gateway_settings_fail_at_start_naming_the_setting(tmp_path: Path, catalogue: Catalogue,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="STREAMREC_GATEWAY__VENDOR_DIR"):
        create_app(offline_settings(tmp_path, vendor_dir=str(tmp_path)), catalogue, connect=False)
    with pytest.raises(SettingsError, match="STREAMREC_GATEWAY__CATALOGUE"):
        load_catalogue(offline_settings(tmp_path, catalogue="no-such-set"))
    monkeypatch.setenv("STREAMREC_GATEWAY__CORS_ORIGINS", '["ftp://example"]')
    with pytest.raises(SettingsError, match="STREAMREC_GATEWAY__CORS_ORIGINS"):
        load_settings()
    monkeypatch.setenv("STREAMREC_GATEWAY__CORS_ORIGINS", '["http://localhost:3000"]')
    monkeypatch.setenv("STREAMREC_GATEWAY__PORT", "70000")
    with pytest.raises(SettingsError, match="STREAMREC_GATEWAY__PORT"):
        load_settings()


async def test_cors_answers_the_configured_origins_only(tmp_path: Path, catalogue: Catalogue) -> None:
    settings = offline_settings(tmp_path, cors_origins=["http://localhost:3000"])
    app = create_app(settings, catalogue, connect=False)
    async with serve(settings, app) as base, client_session() as http:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
        async with http.options(f"{base}/events", headers={"origin": "http://localhost:3000", **preflight}) as resp:
            assert resp.status == 200 and resp.headers["access-control-allow-origin"] == "http://localhost:3000"
        async with http.options(f"{base}/events", headers={"origin": "http://evil.example", **preflight}) as resp:
            assert "access-control-allow-origin" not in resp.headers


def test_a_taken_port_fails_at_start_naming_the_setting(tmp_path: Path) -> None:
    from streamrec.stream.gateway.server import run_gateway

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = offline_settings(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(SettingsError, match="STREAMREC_GATEWAY__PORT"):
            run_gateway(settings)
