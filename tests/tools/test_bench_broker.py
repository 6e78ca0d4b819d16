from __future__ import annotations

import numpy as np

from streamrec.tools.bench_broker import summarise


def test_summarise_reports_each_window_and_the_whole_run() -> None:
    early = np.column_stack([np.linspace(0, 9.9, 100), np.full(100, 5.0)])
    late = np.column_stack([np.linspace(10, 19.9, 100), np.linspace(10, 109, 100)])
    out = summarise(np.vstack([early, late]), window_s=10)
    assert [w["start_s"] for w in out["windows"]] == [0.0, 10.0]
    assert out["windows"][0]["p50_ms"] == 5.0 and out["windows"][0]["p99_ms"] == 5.0
    assert out["windows"][1]["p50_ms"] == 59.5  # the latency that grew shows in its own window
    assert out["messages"] == 200 and out["p50_ms"] == 7.5


def test_summarise_of_nothing() -> None:
    assert summarise(np.empty((0, 2)), window_s=10) == {"messages": 0, "p50_ms": None, "p99_ms": None, "windows": []}
