"""A fixed-size, mergeable latency histogram with bounded relative error.

Buckets grow geometrically (``growth`` per bucket, 2% by default) from ``min_ms`` up,
so a percentile read from it is within ``growth - 1`` of the true sample value
(plus ``min_ms`` absolute near zero). Memory is fixed (a few hundred ints) however
many samples arrive, and two histograms with the same layout merge by adding counts:
windows, workers and stages combine exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


class LatencyHistogram:
    def __init__(self, min_ms: float = 0.01, max_ms: float = 120_000.0, growth: float = 1.02) -> None:
        if not (0 < min_ms < max_ms) or growth <= 1:
            raise ValueError("need 0 < min_ms < max_ms and growth > 1")
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.growth = growth
        self._log_growth = math.log(growth)
        # bucket 0 holds [0, min_ms); bucket k >= 1 holds [min_ms*g^(k-1), min_ms*g^k); last one is overflow
        self._n_buckets = 2 + math.ceil(math.log(max_ms / min_ms) / self._log_growth)
        self.counts = np.zeros(self._n_buckets, dtype=np.int64)
        self.total = 0
        self.max_seen = 0.0

    def record(self, value_ms: float) -> None:
        """Add one sample in milliseconds; negative values count as 0."""
        self.counts[self._bucket(value_ms)] += 1
        self.total += 1
        if value_ms > self.max_seen:
            self.max_seen = value_ms

    def record_many(self, values_ms: Iterable[float]) -> None:
        for value in values_ms:
            self.record(value)

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples into this one; layouts must match."""
        if (other.min_ms, other.max_ms, other.growth) != (self.min_ms, self.max_ms, self.growth):
            raise ValueError("cannot merge histograms with different bucket layouts")
        self.counts += other.counts
        self.total += other.total
        self.max_seen = max(self.max_seen, other.max_seen)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q <= 100) in ms; 0.0 when empty."""
        if self.total == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.total))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(self._upper_edge(bucket), self.max_seen)

    def reset(self) -> None:
        self.counts[:] = 0
        self.total = 0
        self.max_seen = 0.0

    def _bucket(self, value_ms: float) -> int:
        if value_ms < self.min_ms:
            return 0
        k = 1 + int(math.log(value_ms / self.min_ms) / self._log_growth)
        return min(k, self._n_buckets - 1)

    def _upper_edge(self, bucket: int) -> float:
        if bucket == 0:
            return self.min_ms
        if bucket >= self._n_buckets - 1:
            return self.max_seen
        return self.min_ms * self.growth**bucket
