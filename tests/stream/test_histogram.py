from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamrec.stream.histogram import LatencyHistogram

samples = st.lists(st.floats(min_value=0.0, max_value=100_000.0, allow_nan=False), min_size=1, max_size=300)


@given(samples, st.sampled_from([50.0, 95.0, 99.0]))
def test_percentile_within_relative_error_of_exact(values: list[float], q: float) -> None:
    hist = LatencyHistogram()
    hist.record_many(values)
    exact = float(np.percentile(values, q, method="inverted_cdf"))
    assert abs(hist.percentile(q) - exact) <= 0.02 * exact + hist.min_ms


@given(samples, samples)
def test_merge_equals_recording_everything_in_one(a: list[float], b: list[float]) -> None:
    left, right, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    left.record_many(a)
    right.record_many(b)
    both.record_many(a + b)
    left.merge(right)
    assert left.total == both.total
    assert np.array_equal(left.counts, both.counts)
    assert left.percentile(99) == both.percentile(99)


def test_memory_is_fixed_however_many_samples() -> None:
    hist = LatencyHistogram()
    size = hist.counts.nbytes
    hist.record_many(float(i % 1000) for i in range(50_000))
    assert hist.counts.nbytes == size
    assert hist.total == 50_000


def test_empty_histogram_reads_zero_and_reset_empties() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(99) == 0.0
    hist.record(12.0)
    hist.reset()
    assert hist.total == 0 and hist.percentile(50) == 0.0
