"""The machine around a benchmark's measured window: how fast it was, apart from streamrec.

On a shared virtual machine the same code runs at different speeds on different hours:
the worker's update step p50 0.7 ms on one evening, 2.7 ms on another, for the same
events and the same CPU time per event; a latency target then holds or not with the
host. A :class:`HostWindow` records, beside the run's own figures:

- ``steal_percent``: the share of the machine's CPU time the hypervisor gave to other
  guests (``/proc/stat`` steal, through psutil), in % of all cores;
- ``busy_percent``: how busy the cores were (user + system + irq + softirq), in % of all
  cores;
- ``probe_cpu_ms``: the CPU time (its thread's, so waiting for a core does not count) of
  one fixed piece of Python work: slower when other guests share the caches and memory
  bandwidth (0.66-0.74 ms on a fast hour of this project's 2-core machine, 1.05-1.18 ms on
  slow ones);
- ``wake_us``: how late a 1 ms sleep wakes up: the timer, the scheduler and, on a busy
  machine, the wait for a core.

The probes run in their own process (``python -m streamrec.tools.host``), twice a second,
so they never hold up the benchmark's event loop; together they cost ~0.3% of a core.
Each figure is the p50 and max (``wake_us``: p50 and p99) over the window.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import psutil

_PROBE_KEYS = 4096
_WAKES_PER_PROBE = 5


def probe_cpu_ms() -> float:
    """CPU ms (this thread's) of a fixed piece of dict and list work, the kind a worker's
    Python does."""
    began = time.thread_time()
    table = {f"item-{i}": i for i in range(_PROBE_KEYS)}
    total = 0
    for key in sorted(table, reverse=True):
        total += table[key]
    if total != _PROBE_KEYS * (_PROBE_KEYS - 1) // 2:  # keeps the work from being skipped
        raise AssertionError("probe arithmetic")
    return (time.thread_time() - began) * 1000


def wake_late_us(sleep_s: float = 0.001) -> float:
    """How many µs after ``sleep_s`` a sleep returned."""
    began = time.perf_counter()
    time.sleep(sleep_s)
    return max((time.perf_counter() - began - sleep_s) * 1e6, 0.0)


def host_figures(before: Any, after: Any, cpu_ms: Sequence[float], wake_us: Sequence[float] = ()) -> dict[str, float | int | None]:
    """``steal_percent`` and ``busy_percent`` between two ``psutil.cpu_times()`` (machine-wide
    totals), the CPU probes' ``probe_cpu_ms_p50`` / ``_max`` and the wake-ups'
    ``wake_us_p50`` / ``_p99`` (``None`` where there is nothing to count), and how many
    CPU probes there were."""
    import numpy as np  # here, not at the top: the probe process starts without it

    def spent(field: str) -> float:
        return max(getattr(after, field, 0.0) - getattr(before, field, 0.0), 0.0)

    fields = after._fields
    total = sum(spent(f) for f in fields if f not in ("guest", "guest_nice"))  # guest time is inside user already
    busy = sum(spent(f) for f in ("user", "nice", "system", "irq", "softirq") if f in fields)
    return {
        "steal_percent": round(100 * spent("steal") / total, 2) if total > 0 else None,
        "busy_percent": round(100 * busy / total, 1) if total > 0 else None,
        "probes": len(cpu_ms),
        "probe_cpu_ms_p50": round(float(np.percentile(cpu_ms, 50)), 3) if cpu_ms else None,
        "probe_cpu_ms_max": round(max(cpu_ms), 3) if cpu_ms else None,
        "wake_us_p50": round(float(np.percentile(wake_us, 50)), 1) if wake_us else None,
        "wake_us_p99": round(float(np.percentile(wake_us, 99)), 1) if wake_us else None,
    }


def parse_probes(lines: Sequence[str]) -> tuple[list[float], list[float]]:
    """The probe process's output (``cpu <ms>`` and ``wake <µs>`` lines) as two lists;
    anything else (a line cut short when the process was stopped) is skipped."""
    cpu_ms: list[float] = []
    wake_us: list[float] = []
    for line in lines:
        kind, _, value = line.strip().partition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        if kind == "cpu":
            cpu_ms.append(number)
        elif kind == "wake":
            wake_us.append(number)
    return cpu_ms, wake_us


class HostWindow:
    """:func:`host_figures` between :meth:`start` and :meth:`stop`, the probes taken by a
    process of their own meanwhile (``start`` again starts over)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self._before: Any = None
        self._probes: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._end_probes()
        self._before = psutil.cpu_times()
        self._probes = subprocess.Popen([sys.executable, "-m", "streamrec.tools.host", "--every", str(self.every_s)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict[str, float | int | None]:
        after = psutil.cpu_times()
        lines = self._end_probes()
        return host_figures(self._before, after, *parse_probes(lines))

    def _end_probes(self) -> list[str]:
        probes, self._probes = self._probes, None
        if probes is None:
            return []
        probes.terminate()
        out, _ = probes.communicate(timeout=10)
        return out.splitlines()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="probe the host every --every seconds until stopped (tools/host.py)")
    parser.add_argument("--every", type=float, default=0.5)
    args = parser.parse_args(argv)
    while True:
        print(f"cpu {probe_cpu_ms():.4f}", flush=True)
        for _ in range(_WAKES_PER_PROBE):
            print(f"wake {wake_late_us():.1f}", flush=True)
        time.sleep(args.every)


if __name__ == "__main__":
    raise SystemExit(main())
