"""``streamrec bench soak``: does a worker hold steady for as long as it runs?

One long ``bench e2e`` run (its own stack, worker, load generator process and
recommendation reader; tools/bench_e2e.py), ``clicks`` events from many synthetic
users (``--users``) so every user's state is created, revisited and kept, one list per
event. Every ``--every`` seconds it samples the worker's RSS and its consumer group's
lag (records of ``clickstream`` and the item topic past the committed offsets); after
the run it takes the p99 of send → recommendation per window of send time.

After the warm-up (``--warmup`` seconds, while the user population fills in) it checks:
- **memory**: the highest RSS after the warm-up is at most ``1 + --rss-growth`` times the
  RSS at the end of the warm-up;
- **lag**: it never exceeds ``--lag-bound-s`` seconds of events (rate × that);
- **p99**: the last window's p99 is at most ``--p99-growth`` times the median window p99
  after the warm-up, and nothing is lost;
- and, as every bench, ``verify``: the online features equal a recomputation from the
  events it sent.

Writes JSON (the figures, the samples and the checks) and a PNG with RSS, lag and p99
over time. Exit status 1 when a check fails. Everything it starts it stops, by PID,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.tools.bench_e2e import BenchError, E2EConfig, Match, _session
from streamrec.stream.signals import sigterm_as_interrupt


def window_p99(m: Match, every_s: float) -> list[dict[str, float]]:
    """p99 (and p50, count) of the latencies per window of send time, from the first send."""
    if m.send_s.size == 0:
        return []
    t = m.send_s - m.send_s.min()
    out = []
    for k in range(int(t.max() // every_s) + 1):
        inside = m.latencies_ms[(t >= k * every_s) & (t < (k + 1) * every_s)]
        if inside.size:
            p50, p99 = np.percentile(inside, [50, 99])
            out.append({"t": round((k + 0.5) * every_s, 2), "n": int(inside.size),
                        "p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)})
    return out


def checks(timeline: Sequence[Mapping[str, Any]], windows: Sequence[Mapping[str, float]], *, rate: float,
           warmup_s: float, rss_growth: float, lag_bound_s: float, p99_growth: float, lost: int) -> dict[str, Any]:
    """The soak's pass/fail figures (pure: from the samples and the windows)."""
    warm = [s for s in timeline if s["t"] <= warmup_s]
    after = [s for s in timeline if s["t"] > warmup_s]
    rss_ref = warm[-1]["rss_mb"] if warm else (timeline[0]["rss_mb"] if timeline else None)
    rss_max = max((s["rss_mb"] for s in after), default=None)
    growth = None if rss_ref is None or rss_max is None else rss_max / rss_ref - 1
    lags = [s["lag"] for s in timeline if s.get("lag") is not None]
    lag_limit = rate * lag_bound_s
    late_windows = [w for w in windows if w["t"] > warmup_s]
    p99_median = float(np.median([w["p99_ms"] for w in late_windows])) if late_windows else None
    p99_last = late_windows[-1]["p99_ms"] if late_windows else None
    out = {
        "rss_at_warmup_end_mb": rss_ref, "rss_max_after_warmup_mb": rss_max,
        "rss_growth": None if growth is None else round(growth, 4),
        "rss_ok": growth is not None and growth <= rss_growth,
        "lag_max": max(lags, default=None), "lag_limit": lag_limit,
        "lag_ok": bool(lags) and max(lags) <= lag_limit,
        "p99_median_after_warmup_ms": p99_median, "p99_last_window_ms": p99_last,
        "p99_ok": p99_median is not None and p99_last is not None and p99_last <= p99_growth * p99_median,
        "lost": lost, "lost_ok": lost == 0,
    }
    out["ok"] = all(out[k] for k in ("rss_ok", "lag_ok", "p99_ok", "lost_ok"))
    return out


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline, windows, c = report["timeline"], report["windows"], report["checks"]
    fig, (rss, lag, p99) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    rss.plot([s["t"] for s in timeline], [s["rss_mb"] for s in timeline], color="tab:blue")
    rss.set(ylabel="worker RSS (MB)", title=f"soak: {report['rate']:g} events/s for {report['duration_s']:g} s, "
            f"{report['users']} users — {'PASS' if c['ok'] else 'FAIL'}")
    lag.plot([s["t"] for s in timeline if s.get("lag") is not None],
             [s["lag"] for s in timeline if s.get("lag") is not None], color="tab:orange")
    lag.axhline(c["lag_limit"], color="red", ls="--", lw=1, label="lag bound")
    lag.set(ylabel="group lag (records)")
    lag.legend()
    p99.plot([w["t"] for w in windows], [w["p99_ms"] for w in windows], "o-", ms=3, color="tab:red", label="p99")
    p99.plot([w["t"] for w in windows], [w["p50_ms"] for w in windows], "o-", ms=3, color="tab:green", label="p50")
    p99.set(ylabel="send → list (ms)", xlabel="seconds since the load started", yscale="log")
    p99.legend()
    for ax in (rss, lag, p99):
        ax.axvline(report["warmup_s"], color="grey", ls=":", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    from streamrec.stream.settings import load_settings

    config = E2EConfig(rate=args.rate, duration_s=args.duration, json_path=args.json, source="clicks", users=args.users,
                       timeline_every_s=args.every, grace_s=args.grace, partitions=args.partitions,
                       settle_s=0, progress=not args.quiet)  # the soak's own --warmup is its settling
    report = _session(config, load_settings())
    m: Match = report.pop("_latencies")
    windows = window_p99(m, args.every * 6)
    report.update(users=args.users, warmup_s=args.warmup, windows=windows,
                  checks=checks(report.get("timeline", []), windows, rate=args.rate, warmup_s=args.warmup,
                                rss_growth=args.rss_growth, lag_bound_s=args.lag_bound_s,
                                p99_growth=args.p99_growth, lost=report["lost"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    png = args.json.with_suffix(".png")
    report["plot"] = str(png)
    args.json.write_text(json.dumps(report, indent=2))
    plot(report, png)
    return report


def handle(args: argparse.Namespace) -> int:
    try:
        with sigterm_as_interrupt():  # SIGTERM stops what the bench started, as Ctrl-C does
            report = run_soak(args)
    except BenchError as exc:
        print(f"streamrec bench soak: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[soak] interrupted: stopped the producer, the worker and the stack it started", file=sys.stderr)
        return 130
    c = report["checks"]
    print(f"[soak] RSS {c['rss_at_warmup_end_mb']} → max {c['rss_max_after_warmup_mb']} MB (growth {c['rss_growth']}), "
          f"lag max {c['lag_max']} (limit {c['lag_limit']:g}), p99 median {c['p99_median_after_warmup_ms']} ms, "
          f"last {c['p99_last_window_ms']} ms, lost {c['lost']}, verify {'OK' if report['verify']['ok'] else 'FAILED'}: "
          f"{'PASS' if c['ok'] else 'FAIL'}")
    print(f"[soak] wrote {args.json} and {report['plot']}")
    return 0 if c["ok"] and report["verify"]["ok"] else 1


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls: ``streamrec bench soak``."""
    p = bench_subparsers.add_parser("soak", help="a long run: worker RSS, lag and p99 over time (memory stays bounded)")
    p.add_argument("--rate", type=float, default=125.0, help="events/s, one list each (default 125: half the clicks rate that holds)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--users", type=int, default=20_000, help="synthetic users the clicks come from (default 20000)")
    p.add_argument("--warmup", type=float, default=120.0, help="seconds before the checks start (default 120)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between RSS/lag samples; p99 windows are 6x this")
    p.add_argument("--rss-growth", type=float, default=0.10, help="allowed RSS growth after the warm-up (default 0.10)")
    p.add_argument("--lag-bound-s", type=float, default=5.0, help="lag must stay under this many seconds of events")
    p.add_argument("--p99-growth", type=float, default=1.5, help="last window's p99 within this factor of the median")
    p.add_argument("--grace", type=float, default=15.0, help="seconds to wait for outstanding lists")
    p.add_argument("--partitions", type=int, help="partitions of the bench's topics (default: the setting)")
    p.add_argument("--json", type=Path, default=Path("var/bench/soak.json"), help="where to write the figures (a PNG beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)
