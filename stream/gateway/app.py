"""The browser gateway: live recommendations and metrics over Server-Sent Events,
events in over HTTP, the shopper and monitoring pages, all from one ASGI app.

- ``GET /streams/users/{id}``: that user's recommendation lists as they are emitted;
  ``GET /streams/metrics``: metrics snapshots (recent ones first) and the gateway's own figures.
  Both are Server-Sent Events fed by one Kafka consumer (:mod:`streamrec.stream.gateway.hub`).
- ``POST /events``: one event, validated by the worker's own :func:`streamrec.features.messages.parse_event`
  (same size limit, same unknown-field rule), published to ``clickstream`` keyed by user.
  A refused body gets 422 (413 when too large) naming the field.
- ``GET /users/{id}/recommendations``: the user's last list from the recommendation cache.
- ``GET /items``: item metadata (by ids, or a page of a search); ``GET /catalogue``: genres, sample users.
- ``GET /healthz``: broker and Redis reachable; ``GET /metrics``: the gateway's Prometheus figures.
- ``/shop``, ``/monitor``: the pages; ``/docs``: the OpenAPI docs. Every script and
  stylesheet a page loads is served from here (``/static``, ``/vendor``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path as FsPath
from typing import Annotated, Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import Receive, Scope, Send

from streamrec.features.messages import MAX_ID_LENGTH, ClickEvent, Recommendation, Rejection, parse_event
from streamrec.features.online import RedisFeatureStore
from streamrec.infra.kafka_clients import producer
from streamrec.infra.settings import SettingsError
from streamrec.stream.gateway.catalogue import Catalogue, CatalogueItem
from streamrec.stream.gateway.hub import Hub, Subscriber
from streamrec.stream.rec_cache import RecommendationCache
from streamrec.stream.settings import Settings

log = logging.getLogger(__name__)

STATIC_DIR = FsPath(__file__).parent / "static"
DEFAULT_VENDOR_DIR = FsPath(__file__).parent / "web" / "node_modules"
# what the pages load from the npm packages infra/install.sh installs
VENDOR_FILES = ("uplot/dist/uPlot.iife.min.js", "uplot/dist/uPlot.min.css",
                "swagger-ui-dist/swagger-ui-bundle.js", "swagger-ui-dist/swagger-ui.css")
ABORT_EXTENSION = "streamrec.abort"  # set by streamrec.stream.gateway.server: closes a connection at once
HEALTH_TIMEOUT_S = 1.0
MAX_IDS = 500

UserIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f/]+$")]


def vendor_dir(settings: Settings) -> FsPath:
    """The npm packages folder; a missing file fails the start, naming the setting."""
    root = settings.gateway.vendor_dir or DEFAULT_VENDOR_DIR
    missing = [f for f in VENDOR_FILES if not (root / f).is_file()]
    if missing:
        raise SettingsError(
            f"bad setting STREAMREC_GATEWAY__VENDOR_DIR: {root} lacks {', '.join(missing)}; "
            "`bash infra/install.sh` installs them (npm ci in stream/gateway/web), or point the setting at a node_modules folder that has them"
        )
    return root


class Gateway:
    """What the routes share: settings, the hub, a producer, the cache and the catalogue."""

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.hub = Hub(settings)
        self.redis = aioredis.Redis.from_url(settings.redis.effective_url, decode_responses=False,
                                             socket_connect_timeout=HEALTH_TIMEOUT_S, socket_timeout=2.0)
        self.cache = RecommendationCache(RedisFeatureStore(self.redis, settings.features), settings.recommend.cache_ttl_s)
        self.producer: AIOKafkaProducer | None = None
        self.counts: Counter[str] = Counter()
        self._stats_task: asyncio.Task[None] | None = None

    async def start(self, *, connect: bool = True) -> None:
        if connect:
            self.producer = producer(self.settings.broker, linger_ms=self.settings.gateway.producer_linger_ms)
            await self.producer.start()
            await self.hub.start()
        self._stats_task = asyncio.create_task(self._publish_stats(), name="gateway-stats")

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await self.hub.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.redis.aclose()

    def stats(self) -> dict[str, Any]:
        """The gateway's own figures (the monitoring page shows them beside the workers')."""
        lookups = self.cache.hits + self.cache.misses
        return {
            "ts": time.time(),
            "group_id": self.settings.gateway.group_id,
            **self.hub.stats(),
            "events_accepted": self.counts["events_accepted"],
            "events_rejected": self.counts["events_rejected"],
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_hit_rate": round(self.cache.hits / lookups, 4) if lookups else None,
            "rss_bytes": _rss_bytes(),
        }

    async def _publish_stats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway.stats_interval_s)
            self.hub.broadcast_monitors("gateway", orjson.dumps(self.stats()))

    async def health(self) -> tuple[bool, dict[str, Any]]:
        broker, redis = await asyncio.gather(self._broker_ok(), self._redis_ok())
        report = {"broker": broker, "redis": redis,
                  "consumer": {"group_id": self.settings.gateway.group_id, "assigned_partitions": self.hub.assigned}}
        return bool(broker["ok"] and redis["ok"]), report

    async def _broker_ok(self) -> dict[str, Any]:
        if self.producer is None:
            return {"ok": False, "at": self.settings.broker.bootstrap_servers, "error": "not connected"}
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), HEALTH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means: not reachable
            return {"ok": False, "at": self.settings.broker.bootstrap_servers, "error": _describe(exc)}
        return {"ok": True, "at": self.settings.broker.bootstrap_servers}

    async def _redis_ok(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.redis.ping(), HEALTH_TIMEOUT_S)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001
            return {"ok": False, "error": _describe(exc)}
        return {"ok": True}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class EventStream(Response):
    """A Server-Sent Events response fed by one hub ``Subscriber``.

    Frames go out as they arrive, a comment line after ``heartbeat_s`` of quiet. When
    the hub drops the stream (its buffer filled: the browser does not keep up) the
    connection is aborted at once, even while a send is waiting on a full socket.
    """

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, sub: Subscriber, heartbeat_s: float) -> None:
        super().__init__(headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # open-ended: chunked
        self.hub = hub
        self.sub = sub
        self.heartbeat_s = heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        abort = scope.get("extensions", {}).get(ABORT_EXTENSION)
        sub.on_drop = abort
        watcher = asyncio.create_task(self._until_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b"retry: 1000\n: connected\n\n", "more_body": True})
            while True:
                frames = await sub.take(self.heartbeat_s)
                if frames is None:
                    break
                await send({"type": "http.response.body", "body": b"".join(frames) if frames else b": ping\n\n",
                            "more_body": True})
        finally:
            watcher.cancel()
            self.hub.unsubscribe(sub)
        if sub.dropped:
            if abort is not None:
                abort()
            return  # without abort (another server) the server closes the unfinished response
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _until_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.sub.close()


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` put in place (for the OpenAPI request body)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.split("/")[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(ClickEvent.model_json_schema())}},
    },
}


def _rejection_response(rejection: Rejection) -> JSONResponse:
    status = 413 if rejection.reason == "payload_too_large" else 422
    loc = ["body", *rejection.field.split(".")] if rejection.field else ["body"]
    return JSONResponse(status_code=status, content={"detail": [
        {"loc": loc, "field": rejection.field, "type": rejection.reason, "msg": rejection.detail},
    ]})


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is longer than ``limit`` (never reads much past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _item_dicts(items: list[CatalogueItem]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items]


def create_app(settings: Settings, catalogue: Catalogue, *, vendor: FsPath | None = None, connect: bool = True) -> FastAPI:
    """The gateway's ASGI app; starting it (lifespan) starts the consumer and producer.

    ``connect=False`` starts neither (the hub is then fed through ``Hub.dispatch``; posted
    events get 503): for tests of the HTTP side alone."""
    vendor = vendor or vendor_dir(settings)
    gateway = Gateway(settings, catalogue)
    g = settings.gateway

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start(connect=connect)
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="streamrec gateway",
        summary="Live recommendations and metrics for browsers; events in.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    if g.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=g.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["content-type"])

    # -- live streams --------------------------------------------------------------
    def _check_capacity() -> None:
        if gateway.hub.clients >= g.max_clients:
            raise HTTPException(503, f"{g.max_clients} live streams are open (STREAMREC_GATEWAY__MAX_CLIENTS)")

    @app.get("/streams/users/{user_id}", tags=["live"], response_class=EventStream, status_code=200,
             summary="Server-Sent Events: the user's recommendation lists (event `recommendation`)")
    async def user_stream(user_id: UserIdPath) -> EventStream:
        _check_capacity()
        return EventStream(gateway.hub, gateway.hub.subscribe_user(user_id), g.heartbeat_s)

    @app.get("/streams/metrics", tags=["live"], response_class=EventStream, status_code=200,
             summary="Server-Sent Events: worker snapshots (event `metrics`) and the gateway's figures (event `gateway`)")
    async def metrics_stream() -> EventStream:
        _check_capacity()
        return EventStream(gateway.hub, gateway.hub.subscribe_metrics(), g.heartbeat_s)

    # -- events in -----------------------------------------------------------------
    @app.post("/events", tags=["events"], status_code=202, openapi_extra=EVENT_BODY,
              summary="Publish one event to clickstream (validated as the worker validates it)",
              responses={413: {"description": "body larger than STREAMREC_WORKER__MAX_EVENT_BYTES"},
                         422: {"description": "refused: `detail[0].field` names the field, `type` the reason"}})
    async def post_event(request: Request) -> dict[str, Any]:
        limit = settings.worker.max_event_bytes
        body = await _read_body(request, limit)
        result = (Rejection(reason="payload_too_large", detail=f"body larger than limit {limit} bytes") if body is None
                  else parse_event(body, max_bytes=limit, allow_unknown_fields=settings.worker.allow_unknown_fields))
        if isinstance(result, Rejection):
            gateway.counts["events_rejected"] += 1
            return _rejection_response(result)  # type: ignore[return-value]
        if gateway.producer is None:
            raise HTTPException(503, "the gateway is not connected to a broker")
        try:
            sent = await gateway.producer.send_and_wait(settings.topics.clickstream, result.to_bytes(),
                                                        key=result.user_id.encode())
        except Exception as exc:  # noqa: BLE001
            raise HTTPException(503, f"the broker did not take the event: {_describe(exc)}") from None
        gateway.counts["events_accepted"] += 1
        return {"event_id": result.event_id, "topic": sent.topic, "partition": sent.partition, "offset": sent.offset}

    # -- reads ---------------------------------------------------------------------
    @app.get("/users/{user_id}/recommendations", tags=["reads"], response_model=Recommendation,
             summary="The user's last list from the cache (404: none yet, or a new event is being ranked)")
    async def cached_list(user_id: UserIdPath) -> Recommendation:
        try:
            rec = await gateway.cache.get(user_id)
        except (aioredis.RedisError, OSError) as exc:
            raise HTTPException(503, f"the recommendation cache (Redis) is unavailable: {_describe(exc)}") from None
        if rec is None:
            raise HTTPException(404, f"no cached list for user {user_id}")
        return rec

    @app.get("/items", tags=["reads"], summary="Item metadata: the given ids, or a page of the catalogue by popularity")
    async def items(
        ids: Annotated[str | None, Query(description="comma-separated item ids", max_length=20_000)] = None,
        q: Annotated[str, Query(description="words in the title", max_length=200)] = "",
        genre: Annotated[str | None, Query(max_length=100)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 24,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        if ids is not None:
            wanted = [i for i in ids.split(",") if i][:MAX_IDS]
            found = catalogue.lookup(wanted)
            return {"total": len(found), "items": _item_dicts(found)}
        total, page = catalogue.search(q, genre, limit=limit, offset=offset)
        return {"total": total, "items": _item_dicts(page)}

    @app.get("/catalogue", tags=["reads"], summary="The catalogue's name, size, genres and a few known users")
    async def catalogue_info() -> dict[str, Any]:
        return {"name": catalogue.name, "items": len(catalogue), "genres": catalogue.genres, "users": catalogue.users,
                "event_types": [t for t in settings.recommend.trigger_types]}

    # -- operations ----------------------------------------------------------------
    @app.get("/healthz", tags=["operations"], summary="Broker and Redis reachable (503 names what is not)")
    async def healthz() -> JSONResponse:
        ok, report = await gateway.health()
        return JSONResponse(status_code=200 if ok else 503, content={"status": "ok" if ok else "unavailable", **report})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    ProcessCollector(registry=registry)
    app.state.registry = registry

    @app.get("/metrics", tags=["operations"], response_class=Response, summary="The gateway's figures in Prometheus text")
    async def prometheus(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), headers={"content-type": content_type})

    @app.get("/stats", tags=["operations"], summary="The gateway's figures as JSON")
    async def stats() -> dict[str, Any]:
        return gateway.stats()

    # -- pages and assets ----------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/shop")

    @app.get("/shop", include_in_schema=False)
    async def shop() -> FileResponse:
        return FileResponse(STATIC_DIR / "shop.html", headers={"cache-control": "no-cache"})

    @app.get("/monitor", include_in_schema=False)
    async def monitor() -> FileResponse:
        return FileResponse(STATIC_DIR / "monitor.html", headers={"cache-control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="streamrec gateway",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from elsewhere
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/vendor/uplot", StaticFiles(directory=vendor / "uplot" / "dist"), name="uplot")
    app.mount("/vendor/swagger-ui", StaticFiles(directory=vendor / "swagger-ui-dist"), name="swagger-ui")
    return app


class GatewayCollector:
    """The gateway's figures for Prometheus, read at scrape time."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        hub = gw.hub
        clients = GaugeMetricFamily("streamrec_gateway_clients", "Open live streams by kind.", labels=["stream"])
        stats = hub.stats()
        clients.add_metric(["user"], stats["user_streams"])
        clients.add_metric(["metrics"], stats["monitor_streams"])
        yield clients
        yield CounterMetricFamily("streamrec_gateway_streams_dropped", "Live streams dropped for falling behind.",
                                  value=hub.counts["streams_dropped"])
        messages = CounterMetricFamily("streamrec_gateway_messages", "Messages consumed by topic kind.", labels=["kind"])
        messages.add_metric(["recommendations"], hub.counts["recommendations_in"])
        messages.add_metric(["metrics"], hub.counts["metrics_in"])
        yield messages
        yield CounterMetricFamily("streamrec_gateway_frames", "Messages sent to browsers.", value=hub.counts["frames_out"])
        events = CounterMetricFamily("streamrec_gateway_events", "Events posted by browsers.", labels=["result"])
        events.add_metric(["accepted"], gw.counts["events_accepted"])
        events.add_metric(["rejected"], gw.counts["events_rejected"])
        yield events
        cache = CounterMetricFamily("streamrec_gateway_cache_requests", "Recommendation cache reads.", labels=["result"])
        cache.add_metric(["hit"], gw.cache.hits)
        cache.add_metric(["miss"], gw.cache.misses)
        yield cache
