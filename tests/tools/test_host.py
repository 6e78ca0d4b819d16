"""The host figures a benchmark records beside its own (tools/host.py)."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest

from streamrec.tools.host import HostWindow, host_figures, parse_probes

Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")


def test_steal_and_busy_are_shares_of_all_the_time_the_cores_had() -> None:
    before = Times(100, 0, 50, 1000, 10, 0, 5, 20, 30, 0)
    after = Times(160, 0, 70, 1100, 10, 0, 10, 60, 90, 0)  # guest time is counted in user already
    figures = host_figures(before, after, [1.0, 3.0, 2.0], [100.0] * 99 + [5000.0])
    spent = 60 + 20 + 100 + 5 + 40  # user, system, idle, softirq, steal
    assert figures["steal_percent"] == pytest.approx(round(100 * 40 / spent, 2))
    assert figures["busy_percent"] == pytest.approx(round(100 * 85 / spent, 1))
    assert figures["probe_cpu_ms_p50"] == 2.0 and figures["probe_cpu_ms_max"] == 3.0
    assert figures["wake_us_p50"] == 100.0 and 100.0 < figures["wake_us_p99"] < 5000.0


def test_without_probes_or_elapsed_time_the_figures_are_none_not_zero() -> None:
    same = Times(1, 0, 1, 1, 0, 0, 0, 0, 0, 0)
    figures = host_figures(same, same, [])
    assert figures.pop("probes") == 0
    assert set(figures.values()) == {None}


def test_a_line_cut_short_by_the_stop_is_skipped() -> None:
    assert parse_probes(["cpu 1.25", "wake 80.0", "wake 95.5", "cpu 1.5", "wake 1", "wak"]) == ([1.25, 1.5], [80.0, 95.5, 1.0])


def test_a_window_probes_in_its_own_process_and_a_new_start_forgets_the_old_probes() -> None:
    window = HostWindow(every_s=0.1)
    window.start()
    time.sleep(2.0)
    window.start()  # the first probe process is stopped and its probes dropped
    time.sleep(1.0)
    figures = window.stop()
    # a probe every ~107 ms (0.1 s apart, ~7 ms each): about 9 in the second, not the ~27 of both windows
    assert 1 <= figures["probes"] < 14
    assert figures["probe_cpu_ms_p50"] > 0 and figures["wake_us_p50"] is not None
