"""The Faust application: topics, tables and the thin agents around ``EventProcessor``
(stream/processor.py, which runs each batch through the pipeline's stages); the agents
read their topics in batches through stream/consume.py.

Data flow (README's Architecture): ``clickstream`` (keyed by user) → ingest agent:
validate, dead-letter the bad, update the user's state (Faust table with changelog),
write the user's features, send item-side messages (repartitioned by item) and a
recommendation → item agent: update the item's state and features. A timer sends
a metrics snapshot every window. Delivery is at-least-once (or exactly-once on Kafka
transactions); a redelivered record changes nothing, since each user and item keeps
the highest source offset it applied (features/window.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from mode import CrashingSupervisor
from mode.utils.queues import FlowControlEvent
from redis.exceptions import RedisError

from streamrec.infra.kafka_clients import faust_credentials
from streamrec.stream.consume import consume_in_batches, consumer_lag
from streamrec.stream.diagnose import install_report_signal
from streamrec.stream.processor import EventProcessor
from streamrec.stream.prometheus import PrometheusEndpoint, start_prometheus_endpoint
from streamrec.stream.runtime import limit_blas_threads, tune_gc
from streamrec.stream.settings import Settings
from streamrec.stream.topics import STATE_TABLES, faust_app_id
from streamrec.stream.transport import SourceRoutedSink, TunedTransport, flush_now, kafka_producer


log = logging.getLogger(__name__)


class _FlowControl(FlowControlEvent):
    """Faust's flow control of the agents' queues, whose ``resume`` clears them only when
    flow was suspended.

    Faust suspends flow at a rebalance (and clears the queues there), and after recovering
    tables it seeks the stream partitions to their committed offsets and resumes flow,
    which cleared every queue again. But flow was already resumed while the tables
    recovered, so messages fetched from the committed offsets between that seek and the
    second resume were in the queues, marked read, and were cleared: never processed, never
    fetched again. The SIGKILL test under exactly_once lost 1-29 events a run this way
    (tests/stream/test_exactly_once.py). A resume of active flow now clears nothing.
    """

    def resume(self) -> None:
        suspended = self._suspend.is_set()
        self._suspend.clear()
        self._resume.set()
        if suspended:
            self.clear()


class StreamrecApp(faust.App):
    """faust.App with the broker settings Faust does not expose (fetch wait)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self.fetch_max_wait_ms = settings.broker.fetch_max_wait_ms
        self.processor: EventProcessor | None = None
        self.prometheus: PrometheusEndpoint | None = None
        # exactly_once: held by each batch from its first effect to its ack, and by each
        # commit (stream/transport.py), so a transaction holds a batch whole or not at all.
        self.commit_gate = asyncio.Lock()
        super().__init__(**kwargs)
        self.__dict__["flow_control"] = _FlowControl(loop=self.loop)  # before any queue is made (a cached_property)

    def _new_transport(self) -> TunedTransport:
        return TunedTransport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        assert self.processor is not None
        await self.processor.start()
        limit_blas_threads(self.settings.worker.blas_threads)  # the model and its numpy are loaded now
        tune_gc(freeze=self.settings.worker.gc_freeze, full_threshold=self.settings.worker.gc_full_threshold)
        try:
            install_report_signal(self)  # kill -USR2 <pid>: where each partition stands (stream/diagnose.py)
        except (RuntimeError, ValueError):  # not on the main thread (an app run inside a test)
            pass
        w = self.settings.worker
        try:
            self.prometheus = await start_prometheus_endpoint(self.processor.metrics, port=w.prometheus_port, host=w.prometheus_host)
        except OSError as exc:
            raise OSError(f"cannot serve Prometheus metrics on {w.prometheus_host}:{w.prometheus_port} ({exc}); "
                          "set STREAMREC_WORKER__PROMETHEUS_PORT to a free port, or 0 to turn it off") from exc

    async def on_stop(self) -> None:
        if self.prometheus is not None:
            await self.prometheus.stop()
        if self.processor is not None:
            await self.processor.stop()
        await super().on_stop()

    async def before_commit(self) -> None:
        if self.processor is not None:
            await self.processor.before_commit()

    def run_worker(self, *, loglevel: str = "warning") -> int:
        """Blocking: run this app in a Faust worker until SIGINT/SIGTERM."""
        worker = faust.Worker(self, loglevel=loglevel, quiet=True)
        # Faust's terminal spinner lowers the root logger to DEBUG (to spin on every record),
        # so every library's per-request debug call would build a LogRecord: ~3-5% of a busy
        # worker's CPU in a profile. A service has no terminal to spin on.
        worker.spinner = None
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0


def build_app(settings: Settings) -> StreamrecApp:
    """The Faust app for ``settings.worker.role``.

    ``all`` runs every stage in one consumer group. ``features`` (ingest, state,
    feature writes) and ``recommend`` (ranking) run as separate consumer groups
    joined by the ``to_recommend`` topic, so each scales with its own partitions
    and recommending can run where the GPUs are.
    """
    b, w, t = settings.broker, settings.worker, settings.topics
    app = StreamrecApp(
        settings,
        id=faust_app_id(settings),  # its changelogs and leader topic were created by ensure_topics (stream/topics.py)
        broker=b.url,
        broker_credentials=faust_credentials(b),  # SASL / TLS: the same settings as every other client
        store="memory://",
        processing_guarantee=b.processing_guarantee,
        broker_session_timeout=b.session_timeout_s,
        broker_rebalance_timeout=b.rebalance_timeout_s,
        broker_heartbeat_interval=b.heartbeat_interval_s,
        broker_request_timeout=max(40.0, b.session_timeout_s or 0) + 5,
        broker_commit_interval=b.commit_interval_s,
        broker_max_poll_records=b.max_poll_records,
        consumer_auto_offset_reset="earliest",
        topic_partitions=b.partitions,
        topic_replication_factor=b.replication_factor,
        stream_buffer_maxsize=w.stream_buffer_maxsize,
        producer_linger=b.producer_linger_ms / 1000.0,
        datadir=str(w.data_dir / w.id),
        web_enabled=w.web_enabled,
        web_port=w.web_port,
        web_host="127.0.0.1",
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=b.partitions)

    dlq, recommendations, metrics = raw_topic(t.dlq), raw_topic(t.recommendations), raw_topic(t.metrics)
    by_item, to_recommend = raw_topic(t.by_item), raw_topic(t.to_recommend)

    def routed(topic: faust.TopicT) -> SourceRoutedSink:
        return SourceRoutedSink(app, topic)
    tables: dict[str, Any] = {"users": {}, "shards": {}, "items": {}}
    if w.role != "recommend":
        # value_type=bytes: the local stores hold each state's JSON bytes (stream/state_table.py)
        tables = {name: app.Table(table, partitions=b.partitions, value_type=bytes) for name, table in STATE_TABLES.items()}
    clickstream = raw_topic(t.clickstream)
    processor = EventProcessor(settings, **tables, dlq=routed(dlq), by_item=routed(by_item),
                               recommendations=routed(recommendations),
                               to_recommend=routed(to_recommend) if w.role == "features" else None,
                               reroute=routed(clickstream))  # a user's records to the user's partition
    app.processor = processor

    async def flush_outputs() -> None:
        if not app.in_transaction:
            await app.producer.buffer.flush()  # Faust's own queue (send_soon), then aiokafka's
            await flush_now(kafka_producer(app))  # without waiting out the linger

    processor.flush_outputs = flush_outputs

    # Batches amortise Faust's per-message cost and coalesce a user's events into one list; take_events
    # collects for batch_within_ms unless batch_max events fill the batch first.
    take = {"max_": w.batch_max, "within": w.batch_within_ms / 1000.0}

    if w.role != "recommend":
        @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # no def matches mode's SignalHandlerT for mypy
        async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
            await processor.forget_state()

        @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # (the same)
        async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
            await processor.forget_state()

        # An unexpected error (Redis gone, a bug) stops the worker rather than one agent silently:
        # it restarts from the committed offsets and the idempotent updates absorb the redelivery.
        @app.agent(clickstream, name="ingest", supervisor_strategy=CrashingSupervisor)
        async def ingest(stream: faust.StreamT) -> None:
            await consume_in_batches(app, stream, take, processor.on_clickstream)

        @app.agent(by_item, name="item-state", supervisor_strategy=CrashingSupervisor)
        async def item_state(stream: faust.StreamT) -> None:
            await consume_in_batches(app, stream, take, processor.on_item_batch)

    if w.role == "recommend":
        @app.agent(to_recommend, name="recommend", supervisor_strategy=CrashingSupervisor)
        async def recommend(stream: faust.StreamT) -> None:
            await consume_in_batches(app, stream, take, lambda batch: processor.on_recommend_tasks([e for e, _, _ in batch]))

    if settings.recommend.debounce_ms > 0 and w.role != "features":
        @app.timer(interval=settings.recommend.debounce_ms / 2000.0)
        async def release_debounced() -> None:
            await processor.release_debounced()

    if w.role != "recommend":
        @app.timer(interval=w.online_check_s)
        async def check_online_store() -> None:
            await refill_online_if_lost(app, processor)

    @app.timer(interval=w.metrics_interval_s)
    async def publish_metrics() -> None:
        processor.metrics.lag = consumer_lag(app)
        processor.refresh_model_info()
        snapshot = processor.metrics.snapshot()
        await metrics.send(key=w.id.encode(), value=snapshot.to_bytes())

    return app


async def refill_online_if_lost(app: StreamrecApp, processor: EventProcessor) -> None:
    """Rewrite the owned partitions' rows when Redis lost them (stream/online_refill.py);
    not while partitions move or tables recover. Redis still down: the next check retries."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    if app.rebalancing or recovery.in_recovery or not recovery.completed.is_set():
        return
    t = app.settings.topics
    actives = app.assignor.assigned_actives()
    clickstream = {tp.partition for tp in actives if tp.topic == t.clickstream}
    by_item = {tp.partition for tp in actives if tp.topic == t.by_item}
    if not clickstream and not by_item:
        return
    try:
        rows = await processor.refill_online_if_lost(clickstream, by_item)
    except (RedisError, OSError) as exc:
        log.warning("cannot check the online store's marker (%s); trying again in %g s", exc,
                    app.settings.worker.online_check_s)
        return
    if rows is not None:
        log.warning("Redis had lost this worker's rows: rewrote %d from its tables", rows)


__all__ = ["StreamrecApp", "build_app"]
