"""Prometheus text exposition of a worker's ``WorkerMetrics`` on an HTTP endpoint.

``WorkerMetricsCollector`` reads the cumulative counters (``total_counts``) and the
cumulative per-stage histograms (``total_hist``) at scrape time, so the hot path does
nothing extra. Per stage it exposes:

- ``streamrec_stage_latency_seconds``: a Prometheus histogram whose buckets are
  derived from the fine mergeable histogram (``histogram_quantile`` over ``rate``
  gives windowed quantiles and aggregates across workers);
- ``streamrec_stage_latency_summary_seconds``: quantiles 0.5/0.95/0.99 since start;
- ``streamrec_stage_latency_max_seconds``: the largest sample seen.

``LatencyHistogram`` keeps counts, not a sum, so ``_sum`` is estimated from each
fine bucket's geometric midpoint: within ``(growth - 1) / 2`` (1% by default) of the
true sum. A bucket bound counts the fine buckets whose upper edge is at or below it,
so it is exact to one fine bucket (2%) in value.

Counters: ``streamrec_worker_count_total{name=...}``, one sample per counter name the
worker uses (``events_in``, ``dlq``, ``recommendations``, ``scoring_errors``, ...).
Consumer lag: ``streamrec_consumer_lag{topic=...}``, messages not yet read per input
topic, summed over the worker's partitions (what ``WorkerMetrics.lag`` holds). Identity: ``streamrec_worker_info``
(worker id, model version, provider). Process RSS/CPU come from prometheus_client's
``ProcessCollector``.

``PrometheusEndpoint`` serves ``GET /metrics`` from the running asyncio loop (aiohttp,
already a Faust dependency): a scrape runs between the worker's batches and never
races the hot path's updates.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample

from streamrec.stream.histogram import LatencyHistogram
from streamrec.stream.metrics import WorkerMetrics

# Bucket bounds of the exposed histogram, in ms: 0.1 ms .. 60 s in a 1-2.5-5 series.
BUCKET_BOUNDS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
)
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)


def fine_upper_edges_ms(hist: LatencyHistogram) -> np.ndarray:
    """Upper edge of each fine bucket in ms (the overflow bucket's is +inf)."""
    k = np.arange(len(hist.counts), dtype=np.float64)
    edges = hist.min_ms * hist.growth**k  # bucket 0 holds [0, min_ms): its upper edge is min_ms * g^0
    edges[-1] = math.inf
    return edges


def cumulative_buckets(hist: LatencyHistogram, bounds_ms: Sequence[float] = BUCKET_BOUNDS_MS) -> list[tuple[float, int]]:
    """(bound in ms, samples at or below it) for each bound, then (+inf, total).

    A fine bucket is counted under a bound when its upper edge is at or below the
    bound (with a float tolerance), so counts never decrease along the bounds.
    """
    edges = fine_upper_edges_ms(hist)
    cumulative = np.cumsum(hist.counts)
    out: list[tuple[float, int]] = []
    for bound in bounds_ms:
        n_full = int(np.searchsorted(edges, bound * (1 + 1e-9), side="right"))
        out.append((float(bound), int(cumulative[n_full - 1]) if n_full else 0))
    out.append((math.inf, int(hist.total)))
    return out


def estimated_sum_ms(hist: LatencyHistogram) -> float:
    """Sum of the samples estimated from the fine buckets' geometric midpoints, in ms."""
    if hist.total == 0:
        return 0.0
    k = np.arange(len(hist.counts), dtype=np.float64)
    mids = hist.min_ms * hist.growth ** (k - 0.5)
    mids[0] = hist.min_ms / 2
    mids[-1] = hist.max_seen  # overflow: only the maximum is known
    return float(np.dot(hist.counts, mids))


def _label_value(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


class WorkerMetricsCollector:
    """A prometheus_client collector that reads a ``WorkerMetrics`` on every scrape (no I/O)."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        worker = m.worker_id
        info = InfoMetricFamily("streamrec_worker", "Worker identity, model version and ONNX provider in use.",
                                labels=["worker"])
        info.add_metric([worker], {"model_version": str(m.model_version), "provider": str(m.provider)})
        yield info
        counts = CounterMetricFamily("streamrec_worker_count", "Cumulative worker counters by name.",
                                     labels=["worker", "name"])
        for name, value in sorted(dict(m.total_counts).items()):
            counts.add_metric([worker, name], float(value))
        yield counts
        lag = GaugeMetricFamily("streamrec_consumer_lag",
                                "Consumer lag in messages by input topic, summed over the worker's partitions.",
                                labels=["worker", "topic"])
        for topic, value in sorted(dict(m.lag).items()):
            lag.add_metric([worker, str(topic)], float(value))
        yield lag
        yield from self._latency_families(worker, m.total_hist)

    def _latency_families(self, worker: str, hists: dict[str, LatencyHistogram]) -> Iterator[Metric]:
        labels = ["worker", "stage"]
        histogram = HistogramMetricFamily("streamrec_stage_latency_seconds",
                                          "Per-stage latency since start; buckets derived from the worker's "
                                          "mergeable histogram, _sum estimated within 1%.", labels=labels)
        summary = SummaryMetricFamily("streamrec_stage_latency_summary_seconds",
                                      "Per-stage latency quantiles since start (from the mergeable histogram).",
                                      labels=labels)
        maximum = GaugeMetricFamily("streamrec_stage_latency_max_seconds", "Largest per-stage latency since start.",
                                    labels=labels)
        for stage, hist in hists.items():
            sum_s = estimated_sum_ms(hist) / 1000
            buckets = [(_label_value(b / 1000), float(n)) for b, n in cumulative_buckets(hist)]
            histogram.add_metric([worker, stage], buckets, sum_s)
            for q in QUANTILES:
                summary.samples.append(Sample(summary.name, {"worker": worker, "stage": stage, "quantile": repr(q)},
                                              hist.percentile(q * 100) / 1000, None, None))
            summary.add_metric([worker, stage], count_value=hist.total, sum_value=sum_s)
            maximum.add_metric([worker, stage], hist.max_seen / 1000)
        yield histogram
        yield summary
        yield maximum


def metrics_registry(metrics: WorkerMetrics, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) holding the worker's collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerMetricsCollector(metrics))
    if process:
        ProcessCollector(registry=registry)
    return registry


class PrometheusEndpoint:
    """``GET /metrics`` on ``host:port`` serving ``metrics`` as Prometheus text (OpenMetrics if asked).

    ``start``/``stop`` must be awaited in the loop that updates ``metrics``; port 0 binds a
    free port (read it from ``port`` after ``start``). ``start`` raises ``OSError`` when the
    port is taken. Other paths answer 404.
    """

    def __init__(self, metrics: WorkerMetrics, *, port: int, host: str = "127.0.0.1") -> None:
        self.registry = metrics_registry(metrics)
        self.host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the endpoint is not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


async def start_prometheus_endpoint(metrics: WorkerMetrics, *, port: int, host: str = "127.0.0.1") -> PrometheusEndpoint | None:
    """The worker's hook: serve ``metrics`` on ``port``, or do nothing (None) when ``port`` is 0."""
    if port == 0:
        return None
    endpoint = PrometheusEndpoint(metrics, port=port, host=host)
    await endpoint.start()
    return endpoint


__all__ = [
    "BUCKET_BOUNDS_MS",
    "PrometheusEndpoint",
    "WorkerMetricsCollector",
    "cumulative_buckets",
    "estimated_sum_ms",
    "metrics_registry",
    "start_prometheus_endpoint",
]
