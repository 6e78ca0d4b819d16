"""The soak's pure analysis: p99 per window of send time and its pass/fail checks."""

from __future__ import annotations

import numpy as np

from streamrec.tools.bench_e2e import Match
from streamrec.tools.bench_soak import checks, window_p99


def _match(send_s: list[float], latencies: list[float]) -> Match:
    return Match(np.asarray(latencies, dtype=float), np.asarray(send_s, dtype=float), triggering=len(send_s),
                 answered=len(send_s), superseded=0)


def test_windows_split_by_send_time_from_the_first_send() -> None:
    send = [100.0 + t for t in np.arange(0, 20, 0.1)]  # 200 events over 20 s
    lat = [10.0] * 100 + [50.0] * 99 + [500.0]  # the second window is slower and has one outlier
    windows = window_p99(_match(send, lat), every_s=10.0)
    assert [w["n"] for w in windows] == [100, 100]
    assert windows[0]["p99_ms"] == 10.0
    assert 50.0 < windows[1]["p99_ms"] <= 500.0 and windows[1]["p50_ms"] == 50.0


def _timeline(rss: list[float], lag: list[int | None], every: float = 10.0) -> list[dict]:
    return [{"t": k * every, "rss_mb": r, "lag": g} for k, (r, g) in enumerate(zip(rss, lag))]


def test_checks_pass_a_flat_run_and_fail_growth_lag_and_slowdown() -> None:
    windows = [{"t": t, "n": 100, "p50_ms": 10.0, "p99_ms": 40.0} for t in (15, 45, 75, 105)]
    flat = checks(_timeline([200, 250, 255, 252, 258, 260], [5, 20, None, 30, 10, 0]), windows, rate=100,
                  warmup_s=10, rss_growth=0.10, lag_bound_s=5, p99_growth=1.5, lost=0)
    assert flat["ok"] and flat["rss_at_warmup_end_mb"] == 250 and flat["lag_max"] == 30
    growing = checks(_timeline([200, 250, 270, 280], [0, 0, 0, 0]), windows, rate=100, warmup_s=10,
                     rss_growth=0.10, lag_bound_s=5, p99_growth=1.5, lost=0)
    assert not growing["rss_ok"] and abs(growing["rss_growth"] - 0.12) < 1e-9 and not growing["ok"]
    lagging = checks(_timeline([200, 200, 200], [0, 400, 600]), windows, rate=100, warmup_s=10,
                     rss_growth=0.10, lag_bound_s=5, p99_growth=1.5, lost=0)
    assert not lagging["lag_ok"] and lagging["rss_ok"]
    slower = [*windows[:-1], {"t": 105, "n": 100, "p50_ms": 10.0, "p99_ms": 90.0}]
    slowing = checks(_timeline([200, 200, 200], [0, 0, 0]), slower, rate=100, warmup_s=10,
                     rss_growth=0.10, lag_bound_s=5, p99_growth=1.5, lost=0)
    assert not slowing["p99_ok"]
    lossy = checks(_timeline([200, 200], [0, 0]), windows, rate=100, warmup_s=10, rss_growth=0.1,
                   lag_bound_s=5, p99_growth=1.5, lost=1)
    assert not lossy["ok"] and lossy["p99_ok"]
