"""``streamrec bench e2e``: the pure parts (matching, percentiles, loss, pacing, the sweep's
search) with plain values and properties, and one short run through a real worker."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streamrec.tools.bench_e2e import (
    E2EConfig,
    Match,
    Received,
    Sent,
    _pin_bench,
    _step_result,
    _write,
    bench_settings,
    ends,
    latency_summary,
    match,
    next_sweep_rate,
    run_e2e,
    split_settle,
    step_ok,
    verified_ok,
    worker_as,
)
from streamrec.tools.loadgen import due_count
from streamrec.stream.settings import load_settings

REQUIRED_KEYS = {"rate", "events", "recommendations", "lost", "p50_ms", "p95_ms", "p99_ms", "worker_rss_mb"}


# -- matching and loss ---------------------------------------------------------------
def test_latency_is_receive_time_minus_send_time_per_answered_event() -> None:
    sent = [Sent("a", "u1", 100.0, True), Sent("b", "u2", 100.5, True)]
    received = {"a": Received(100.020), "b": Received(100.530)}

    m = match(sent, received)

    assert m.latencies_ms.tolist() == pytest.approx([20.0, 30.0])
    assert (m.answered, m.lost, m.superseded) == (2, 0, 0)


def test_an_unanswered_event_is_lost_unless_a_later_event_of_its_user_was_answered() -> None:
    sent = [
        Sent("a1", "u1", 1.0, True),  # superseded by a2
        Sent("a2", "u1", 2.0, True),
        Sent("b1", "u2", 1.5, True),  # lost: nothing later for u2 was answered
        Sent("c2", "u3", 3.0, True),  # lost although an earlier u3 event was answered
        Sent("c1", "u3", 0.5, True),
    ]
    received = {"a2": Received(2.01), "c1": Received(0.6)}

    m = match(sent, received)

    assert (m.answered, m.superseded, m.lost) == (2, 1, 2)
    assert sorted(m.lost_ids) == ["b1", "c2"]


def test_non_triggering_events_are_neither_answered_nor_lost_and_strangers_are_ignored() -> None:
    sent = [Sent("s", "u1", 1.0, False), Sent("t", "u1", 2.0, True)]
    received = {"t": Received(2.5), "warmup-1": Received(0.1)}

    m = match(sent, received)

    assert (m.triggering, m.answered, m.lost) == (1, 1, 0)


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans()), max_size=60))
def test_every_triggering_event_is_answered_superseded_or_lost(rows: list[tuple[int, bool, bool]]) -> None:
    sent = [Sent(f"e{i}", f"u{user}", float(i), trig) for i, (user, trig, _) in enumerate(rows)]
    received = {f"e{i}": Received(i + 0.01) for i, (_, _, got) in enumerate(rows) if got}

    m = match(sent, received)

    assert m.answered + m.covered + m.superseded + m.lost == sum(trig for _, trig, _ in rows)
    assert (m.latencies_ms > 0).all()


def test_a_covered_event_is_timed_to_the_list_that_carried_its_effect() -> None:
    sent = [Sent("a1", "u1", 1.0, True), Sent("a2", "u1", 1.001, True), Sent("b1", "u2", 1.002, True)]
    received = {"a2": Received(1.031, covers=("a1",))}

    m = match(sent, received)

    assert (m.answered, m.covered, m.superseded, m.lost) == (1, 1, 0, 1)
    assert m.latencies_ms.tolist() == pytest.approx([31.0, 30.0])  # a1 to a2's list, then a2


# -- percentiles ---------------------------------------------------------------------
def test_latency_summary_of_known_values() -> None:
    summary = latency_summary(np.arange(1, 101, dtype=float), prefix="")

    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert (summary["max_ms"], summary["mean_ms"]) == (100.0, 50.5)


def test_latency_summary_of_nothing_is_none() -> None:
    assert latency_summary([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}


def test_a_step_holds_only_without_loss_within_the_target_at_the_offered_rate() -> None:
    base = {"lost": 0, "p99_ms": 200.0, "rate": 100.0, "achieved_rate": 99.0}
    assert step_ok(base, 250)
    assert not step_ok({**base, "lost": 1}, 250)
    assert not step_ok({**base, "p99_ms": 251.0}, 250)
    assert not step_ok({**base, "achieved_rate": 90.0}, 250)
    assert not step_ok({**base, "p99_ms": None}, 250)


# -- the settling window -------------------------------------------------------------
def _step(sent: list[Sent], received: dict[str, Received], settle_s: float) -> dict:
    return _step_result(10.0, sent, received, [50.0], {}, span=10.0, settle_s=settle_s)


def test_the_headline_percentiles_leave_the_settling_seconds_out_and_report_them_apart() -> None:
    sent = [Sent(f"e{i}", f"u{i}", 100.0 + i * 0.1, True) for i in range(100)]  # 10 s at 10/s
    slow_first = {s.event_id: Received(s.send_s + (0.5 if i < 30 else 0.01)) for i, s in enumerate(sent)}

    settled, whole = _step(sent, slow_first, settle_s=3.0), _step(sent, slow_first, settle_s=0.0)

    assert (settled["events"], settled["settle"]["events"], settled["events_total"]) == (70, 30, 100)
    assert settled["p99_ms"] == pytest.approx(10.0) and settled["settle"]["p50_ms"] == pytest.approx(500.0)
    assert whole["events"] == 100 and whole["p99_ms"] == pytest.approx(500.0)
    assert settled["measured_from_epoch_s"] == pytest.approx(103.0)


def test_an_event_lost_while_settling_still_counts_as_lost() -> None:
    sent = [Sent("early", "u1", 100.0, True), Sent("late", "u2", 105.0, True)]

    result = _step(sent, {"late": Received(105.01)}, settle_s=3.0)

    assert result["lost"] == 1 and result["lost_sample"] == ["early"]
    assert result["recommendations"] == 1 and result["events"] == 1


def test_a_settling_event_superseded_by_a_measured_one_is_not_lost() -> None:
    sent = [Sent("a1", "u1", 100.0, True), Sent("a2", "u1", 104.0, True)]

    result = _step(sent, {"a2": Received(104.01)}, settle_s=3.0)

    assert result["lost"] == 0 and result["settle"]["events"] == 1


def test_a_report_with_a_settling_window_plots_it_apart(tmp_path: Path) -> None:
    sent = [Sent(f"e{i}", f"u{i}", 100.0 + i * 0.1, True) for i in range(100)]
    report = _step(sent, {s.event_id: Received(s.send_s + 0.02) for s in sent}, settle_s=3.0)
    report.update(worker_rss_mb=80.0, duration_s=7.0)

    _write(report, tmp_path / "e2e.json")

    written = json.loads((tmp_path / "e2e.json").read_text())
    assert written["settle"]["seconds"] == 3.0 and (tmp_path / "e2e.png").stat().st_size > 10_000


def test_ends_compare_the_first_and_the_last_stretch_of_a_run() -> None:
    send = np.arange(0.0, 300.0, 0.5)  # 5 min, latency climbing from 10 to ~40 ms
    m = Match(10.0 + send / 10, send, triggering=send.size, answered=send.size, superseded=0)

    e = ends(m)

    assert e["seconds"] == 60.0
    assert e["first"]["max_ms"] < 16.0 < 34.0 < e["last"]["p50_ms"]
    assert ends(Match(np.ones(5), np.arange(5.0), triggering=5, answered=5, superseded=0))["seconds"] == 1.0  # a quarter
    assert ends(Match(np.zeros(0), np.zeros(0), triggering=0, answered=0, superseded=0)) == {}


def test_split_settle_keeps_what_was_sent_from_the_window_start_on() -> None:
    sent = [Sent(f"e{i}", "u", 50.0 + i, True) for i in range(5)]
    measured, begins = split_settle(sent, 2.0)
    assert [s.event_id for s in measured] == ["e2", "e3", "e4"] and begins == 52.0
    assert split_settle(sent, 0.0) == (sent, 50.0) and split_settle([], 5.0) == ([], 0.0)


# -- pacing --------------------------------------------------------------------------
@given(st.floats(1, 5000), st.floats(0, 20), st.integers(1, 100_000))
def test_due_count_is_the_number_of_events_whose_send_time_has_come(rate: float, elapsed: float, total: int) -> None:
    due = due_count(elapsed, rate, total)
    assert 1 <= due <= total
    if due < total:
        assert (due - 1) / rate <= elapsed + 1e-6 and due / rate > elapsed - 1e-6


def test_due_count_before_the_start_and_at_exact_send_times() -> None:
    assert due_count(-0.1, 100, 10) == 0
    assert [due_count(n / 100, 100, 1000) for n in (0, 1, 50)] == [1, 2, 51]
    assert due_count(1e6, 100, 1000) == 1000


# -- sweep search --------------------------------------------------------------------
def test_sweep_grows_then_bisects_then_stops() -> None:
    kw = {"start": 100, "factor": 2, "max_rate": 4000, "resolution": 0.1}
    assert next_sweep_rate([], **kw) == 100
    assert next_sweep_rate([(100, True), (200, True)], **kw) == 400
    assert next_sweep_rate([(100, True), (200, True), (400, False)], **kw) == 300
    assert next_sweep_rate([(100, True), (200, True), (400, False), (300, True), (350, True), (375, False)], **kw) is None
    assert next_sweep_rate([(4000, True)], **kw) is None


@given(st.floats(1, 10_000), st.sampled_from([0.05, 0.1, 0.2]))
def test_sweep_finds_the_threshold_within_the_resolution(threshold: float, resolution: float) -> None:
    kw = {"start": 100.0, "factor": 2.0, "max_rate": 4000.0, "resolution": resolution}
    history: list[tuple[float, bool]] = []
    while (rate := next_sweep_rate(history, **kw)) is not None:
        history.append((rate, rate <= threshold))
        assert len(history) <= 30
    best = max((r for r, ok in history if ok), default=0.0)
    if threshold >= 4000:
        assert best == 4000
    else:
        assert best <= threshold and (threshold - best) <= resolution * min(r for r, ok in history if not ok) + 0.1


# -- configuration and settings ------------------------------------------------------
def test_config_refuses_half_an_external_stack_and_non_positive_rates() -> None:
    with pytest.raises(ValidationError, match="--redis-url"):
        E2EConfig(bootstrap_servers="127.0.0.1:9092")
    with pytest.raises(ValidationError, match="rate"):
        E2EConfig(rate=0)


def test_bench_settings_give_the_run_its_own_names_and_the_given_services(tmp_path: Path) -> None:
    base = load_settings()

    s = bench_settings(base, bootstrap_servers="127.0.0.1:1234", redis_url="redis://127.0.0.1:5/2", run_id="abc",
                       data_dir=tmp_path, partitions=3)

    assert s.broker.bootstrap_servers == "127.0.0.1:1234" and s.broker.partitions == 3
    assert s.redis.url == "redis://127.0.0.1:5/2"
    assert s.topics.clickstream == "bench-abc.clickstream" and s.topics.recommendations == "bench-abc.recommendations"
    assert (s.worker.app_id, s.features.project, s.worker.data_dir) == ("bench-abc", "bench_abc", tmp_path)
    assert s.broker.fetch_max_wait_ms == base.broker.fetch_max_wait_ms


def test_the_report_is_written_as_json_with_a_plot_beside_it(tmp_path: Path) -> None:
    m = match([Sent(f"e{i}", "u", float(i), True) for i in range(50)], {f"e{i}": Received(i + 0.01 * (i + 1)) for i in range(50)})
    report = {"rate": 10.0, "events": 50, "recommendations": 50, "lost": 0, "duration_s": 5.0,
              **latency_summary(m.latencies_ms), "worker_rss_mb": 80.0, "_latencies": m}

    _write(report, tmp_path / "e2e.json")

    written = json.loads((tmp_path / "e2e.json").read_text())
    assert REQUIRED_KEYS <= written.keys() and "_latencies" not in written
    assert (tmp_path / "e2e.png").stat().st_size > 10_000


def test_a_sweep_report_plots_percentiles_by_rate(tmp_path: Path) -> None:
    steps = []
    for rate in (100.0, 200.0):
        m = Match(np.array([5.0, 9.0, 12.0]), np.array([0.0, 1.0, 2.0]), triggering=3, answered=3, superseded=0)
        steps.append({"rate": rate, **latency_summary(m.latencies_ms), "lost": 0, "_latencies": m})
    report = {**{k: v for k, v in steps[1].items()}, "mode": "sweep", "p99_target_ms": 250.0, "best_rate": 200.0,
              "steps": steps, "events": 3, "recommendations": 3, "worker_rss_mb": 1.0}

    _write(report, tmp_path / "sweep.json")

    written = json.loads((tmp_path / "sweep.json").read_text())
    assert [s["rate"] for s in written["steps"]] == [100.0, 200.0] and written["best_rate"] == 200.0
    assert (tmp_path / "sweep.png").exists()


def test_the_bench_fails_when_any_run_fails_verify() -> None:
    ok, bad = {"ok": True}, {"ok": False}
    assert verified_ok({"verify": ok})
    assert not verified_ok({"verify": bad})
    assert not verified_ok({"verify": ok, "steps": [{"verify": ok}, {"verify": bad}]})
    assert verified_ok({"verify": ok, "steps": [{"rate": 100}]})  # one stack: steps carry no verify of their own


# -- a real run ----------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.slow
def test_a_short_run_through_a_real_worker_answers_every_event(bootstrap_servers: str, redis_url: str, tmp_path: Path) -> None:
    config = E2EConfig(rate=20, duration_s=5, settle_s=2, json_path=tmp_path / "e2e.json", source="clicks", grace_s=20,
                       bootstrap_servers=bootstrap_servers, redis_url=redis_url.rpartition("/")[0] + "/5",
                       partitions=2, progress=False)

    report = run_e2e(config, load_settings())

    written = json.loads((tmp_path / "e2e.json").read_text())
    assert REQUIRED_KEYS <= written.keys()
    assert written["events"] >= 95 and written["lost"] == 0
    assert written["recommendations"] + written["superseded"] == written["events"]
    assert 0 < written["p50_ms"] <= written["p95_ms"] <= written["p99_ms"]
    assert written["worker_rss_mb"] > 20 and not math.isnan(written["worker_rss_mb"])
    assert (tmp_path / "e2e.png").exists()
    assert not psutil.pid_exists(report["worker_pid"]), "the worker was left running"
    assert written["verify"]["ok"], written["verify"]["mismatches"]
    assert written["settle"]["events"] >= 35 and written["events_total"] == written["events"] + written["settle"]["events"]
    assert written["verify"]["events_applied"] >= written["events_total"]


def test_a_second_worker_joins_the_group_with_its_own_id_and_data_dir(tmp_path: Path) -> None:
    first = bench_settings(load_settings(), bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0",
                           run_id="r1", data_dir=tmp_path / "worker", partitions=4)

    second = worker_as(first, 1, tmp_path / "worker-1")

    assert second.worker.app_id == first.worker.app_id and second.topics == first.topics
    assert (second.worker.id, second.worker.data_dir) == ("bench-r1-1", tmp_path / "worker-1")
    assert first.worker.id == "bench-r1" and first.worker.data_dir == tmp_path / "worker"


@pytest.mark.integration
@pytest.mark.slow
def test_two_workers_split_the_lists_and_the_features_stay_exact(bootstrap_servers: str, redis_url: str, tmp_path: Path) -> None:
    config = E2EConfig(rate=40, duration_s=5, settle_s=0, workers=2, json_path=tmp_path / "e2e.json", source="clicks",
                       grace_s=20, bootstrap_servers=bootstrap_servers, redis_url=redis_url.rpartition("/")[0] + "/6",
                       partitions=4, progress=False)

    run_e2e(config, load_settings())

    written = json.loads((tmp_path / "e2e.json").read_text())
    assert written["workers"] == 2 and written["lost"] == 0
    assert {"worker-0", "worker-1"} <= written["cpu_percent"].keys()
    assert min(written["cpu_percent"]["worker-0"], written["cpu_percent"]["worker-1"]) > 1.0  # both ranked
    assert written["verify"]["ok"], written["verify"]["mismatches"]


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_stops_the_worker_and_the_stack_the_bench_started(tmp_path: Path) -> None:
    bench = subprocess.Popen([sys.executable, "-m", "streamrec.tools.bench_e2e", "--rate", "10", "--duration", "5",
                              "--json", str(tmp_path / "e2e.json"), "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = bench.stdout.readline() if bench.stdout else ""
        worker_pid = int(re.search(r"worker pid (\d+)", first).group(1))  # type: ignore[union-attr]
        stack_file = next(tmp_path.glob("e2e-*/stack/stack.json"))
        started = [worker_pid] + [r["pid"] for r in json.loads(stack_file.read_text())]
        time.sleep(2)  # the bench is waiting for the worker's first answer

        bench.send_signal(signal.SIGTERM)
        code = bench.wait(60)
    finally:
        if bench.poll() is None:
            bench.kill()
        if bench.stdout:
            bench.stdout.close()

    assert code == 130
    assert [pid for pid in started if psutil.pid_exists(pid)] == []


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--pin needs two cores")
def test_pin_keeps_the_last_core_for_the_workers_and_gives_the_bench_its_cores_back() -> None:
    from contextlib import ExitStack

    before = os.sched_getaffinity(0)
    with ExitStack() as cleanup:
        worker_core = _pin_bench(cleanup)
        assert worker_core == str(max(before))
        assert os.sched_getaffinity(0) == before - {max(before)}  # what the bench starts now inherits this
    assert os.sched_getaffinity(0) == before
