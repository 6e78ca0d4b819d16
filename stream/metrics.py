"""Per-worker counters and per-stage latency histograms, cut into windows.

The worker calls ``count`` and ``observe`` on the hot path (no I/O, O(1)); a timer
calls ``snapshot`` every window and sends the result on the ``metrics`` topic.
Cumulative histograms are kept too, for the Prometheus endpoint.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from streamrec.features.messages import MetricsSnapshot, Percentiles
from streamrec.stream.histogram import LatencyHistogram

STAGES = ("user_update", "item_update", "handover", "candidates", "features", "scoring", "recommend_total", "event_to_emit",
          "gc_pause")


class WorkerMetrics:
    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.window_counts: Counter[str] = Counter()
        self.total_counts: Counter[str] = Counter()
        self.window_hist = {stage: LatencyHistogram() for stage in STAGES}
        self.total_hist = {stage: LatencyHistogram() for stage in STAGES}
        self._window_start = time.time()
        self.model_version = "none"
        self.provider = "none"
        self.lag: dict[str, int] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.window_counts[name] += n
        self.total_counts[name] += n

    def observe(self, stage: str, ms: float) -> None:
        self.window_hist[stage].record(ms)
        self.total_hist[stage].record(ms)

    def snapshot(self) -> MetricsSnapshot:
        """The window since the last snapshot; starts a new window."""
        now = time.time()
        span = max(now - self._window_start, 1e-9)
        snap = MetricsSnapshot(
            worker_id=self.worker_id,
            window_start=datetime.fromtimestamp(self._window_start, tz=timezone.utc),
            window_end=datetime.fromtimestamp(now, tz=timezone.utc),
            counts=dict(self.window_counts),
            latency_ms={stage: _percentiles(h) for stage, h in self.window_hist.items() if h.total},
            events_per_s=round(self.window_counts["events_in"] / span, 2),
            dlq_count=self.window_counts["dlq"],
            lag=dict(self.lag),
            model_version=self.model_version,
            provider=self.provider,
        )
        self.window_counts.clear()
        for hist in self.window_hist.values():
            hist.reset()
        self._window_start = now
        return snap


class GcPauses:
    """Times every garbage collection into ``metrics`` (stage ``gc_pause``, count
    ``gc_full`` for generation 2): a stalled event loop shows up in the tails of
    every other stage, and this says when the collector caused it.

    ``install``/``uninstall`` add and remove the ``gc.callbacks`` hook. Collections
    can run on any thread; the hook only records (no I/O).
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.metrics.observe("gc_pause", (time.perf_counter() - self._began) * 1000)
        if info.get("generation") == 2:
            self.metrics.count("gc_full")

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def _percentiles(hist: LatencyHistogram) -> Percentiles:
    return Percentiles(
        count=hist.total,
        p50=round(hist.percentile(50), 3),
        p95=round(hist.percentile(95), 3),
        p99=round(hist.percentile(99), 3),
        max=round(hist.max_seen, 3),
    )
