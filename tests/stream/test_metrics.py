from __future__ import annotations

import gc

from streamrec.stream.metrics import GcPauses, WorkerMetrics


def test_gc_pauses_times_each_collection_and_counts_full_ones() -> None:
    metrics = WorkerMetrics("w")
    pauses = GcPauses(metrics)
    gc.disable()  # only the collections the test asks for
    pauses.install()
    pauses.install()  # idempotent: one hook, one sample per collection
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
        gc.enable()
    gc.collect()  # not recorded any more
    hist = metrics.total_hist["gc_pause"]
    assert hist.total == 2
    assert metrics.total_counts["gc_full"] == 1
    assert pauses not in gc.callbacks


def test_gc_pauses_appear_in_the_window_snapshot() -> None:
    metrics = WorkerMetrics("w")
    pauses = GcPauses(metrics)
    gc.disable()
    pauses.install()
    try:
        gc.collect(1)
    finally:
        pauses.uninstall()
        gc.enable()
    snapshot = metrics.snapshot()
    assert snapshot.latency_ms["gc_pause"].count == 1
    assert snapshot.latency_ms["gc_pause"].max >= 0.0
    assert "gc_full" not in snapshot.counts
