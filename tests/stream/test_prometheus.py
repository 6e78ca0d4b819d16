"""The worker's Prometheus endpoint: served in-process, scraped over HTTP, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import math

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamrec.infra.stack import free_port
from streamrec.stream.histogram import LatencyHistogram
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.prometheus import (
    BUCKET_BOUNDS_MS,
    PrometheusEndpoint,
    cumulative_buckets,
    estimated_sum_ms,
    start_prometheus_endpoint,
)

SCORING_MS = [0.5 + i for i in range(100)]  # 0.5 .. 99.5 ms, none within 2% below a bucket bound


def filled_metrics() -> WorkerMetrics:
    metrics = WorkerMetrics("w-test")
    metrics.count("events_in", 7)
    metrics.count("dlq", 2)
    metrics.count("recommendations", 5)
    for ms in SCORING_MS:
        metrics.observe("scoring", ms)
    metrics.model_version = "ranker-v3"
    metrics.provider = "CPUExecutionProvider"
    metrics.lag = {"clickstream": 4, "streamrec.events-by-item": 0}  # per topic, as the worker fills it
    metrics.snapshot()  # a window ends: the cumulative figures must survive it
    return metrics


async def scrape(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def key(metric: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return metric, frozenset({"worker": "w-test", **labels}.items())


@pytest.fixture
async def endpoint():  # type: ignore[no-untyped-def]
    ep = PrometheusEndpoint(filled_metrics(), port=0)
    await ep.start()
    yield ep
    await ep.stop()


async def test_counters_info_and_lag_are_scraped(endpoint: PrometheusEndpoint) -> None:
    status, content_type, text = await scrape(endpoint.url)
    got = samples(text)
    assert status == 200 and content_type.startswith("text/plain")
    assert got[key("streamrec_worker_count_total", name="events_in")] == 7
    assert got[key("streamrec_worker_count_total", name="dlq")] == 2
    assert got[key("streamrec_worker_info", model_version="ranker-v3", provider="CPUExecutionProvider")] == 1
    assert got[key("streamrec_consumer_lag", topic="clickstream")] == 4
    assert got[key("streamrec_consumer_lag", topic="streamrec.events-by-item")] == 0


async def test_stage_latency_quantiles_come_from_the_cumulative_histogram(endpoint: PrometheusEndpoint) -> None:
    got = samples((await scrape(endpoint.url))[2])
    p50 = got[key("streamrec_stage_latency_summary_seconds", stage="scoring", quantile="0.5")]
    p99 = got[key("streamrec_stage_latency_summary_seconds", stage="scoring", quantile="0.99")]
    assert 0.0495 <= p50 <= 0.0495 * 1.02
    assert 0.0985 <= p99 <= 0.0985 * 1.02
    assert got[key("streamrec_stage_latency_summary_seconds_count", stage="scoring")] == 100
    assert got[key("streamrec_stage_latency_max_seconds", stage="scoring")] == pytest.approx(0.0995)


async def test_stage_latency_histogram_buckets_count_and_sum(endpoint: PrometheusEndpoint) -> None:
    got = samples((await scrape(endpoint.url))[2])
    assert got[key("streamrec_stage_latency_seconds_bucket", stage="scoring", le="0.01")] == 10
    assert got[key("streamrec_stage_latency_seconds_bucket", stage="scoring", le="0.025")] == 25
    assert got[key("streamrec_stage_latency_seconds_bucket", stage="scoring", le="+Inf")] == 100
    assert got[key("streamrec_stage_latency_seconds_count", stage="scoring")] == 100
    assert got[key("streamrec_stage_latency_seconds_sum", stage="scoring")] == pytest.approx(sum(SCORING_MS) / 1000, rel=0.01)
    assert got[key("streamrec_stage_latency_seconds_count", stage="features")] == 0


async def test_scrapes_see_new_samples_and_other_paths_are_404() -> None:
    collector_metrics = filled_metrics()
    ep = PrometheusEndpoint(collector_metrics, port=0)
    await ep.start()
    try:
        collector_metrics.count("events_in", 3)
        got = samples((await scrape(ep.url))[2])
        missing, _, _ = await scrape(ep.url.replace("/metrics", "/nothing"))
    finally:
        await ep.stop()
    assert got[key("streamrec_worker_count_total", name="events_in")] == 10
    assert missing == 404


async def test_process_metrics_are_included(endpoint: PrometheusEndpoint) -> None:
    got = samples((await scrape(endpoint.url))[2])
    assert got[("process_resident_memory_bytes", frozenset())] > 10_000_000


async def test_port_zero_in_the_setting_means_off_and_a_taken_port_fails() -> None:
    assert await start_prometheus_endpoint(WorkerMetrics("w"), port=0) is None
    first = await start_prometheus_endpoint(WorkerMetrics("w"), port=free_port())
    assert first is not None
    try:
        with pytest.raises(OSError):
            await start_prometheus_endpoint(WorkerMetrics("w"), port=first.port)
    finally:
        await first.stop()


@given(st.lists(st.floats(min_value=0, max_value=200_000, allow_nan=False), max_size=300))
def test_derived_buckets_bracket_the_true_counts(values: list[float]) -> None:
    hist = LatencyHistogram()
    hist.record_many(values)
    buckets = cumulative_buckets(hist)
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1] == (math.inf, len(values))
    for bound, n in buckets[:-1]:
        assert sum(v <= bound / hist.growth for v in values) <= n <= sum(v <= bound for v in values)
    assert len(buckets) == len(BUCKET_BOUNDS_MS) + 1


@given(st.lists(st.floats(min_value=0.01, max_value=100_000, allow_nan=False), min_size=1, max_size=300))
def test_estimated_sum_is_within_the_bucket_resolution(values: list[float]) -> None:
    hist = LatencyHistogram()
    hist.record_many(values)
    assert estimated_sum_ms(hist) == pytest.approx(sum(values), rel=(hist.growth - 1) / 2 + 1e-9)
