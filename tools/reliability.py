"""The reliability report: records that fault and fuzz tests leave, rendered as one report.

Anything that injects a fault or tries payloads writes one JSON record per run into a
directory (``STREAMREC_RELIABILITY_DIR``, default ``artifacts/reliability``) with
:func:`write_record`; ``streamrec bench reliability`` (:func:`render`) reads them all
and writes a markdown table and a JSON summary: payloads tried, faults injected, events
lost, events doubled (and the bound each run allows), recovery times.

A record is a JSON object. Required: ``name`` (unique per scenario: a later run of the
same name replaces the earlier record) and ``kind`` (``fault``, ``fuzz``, …). Optional,
each summed over the records: ``payloads_tried``, ``faults_injected``, ``events_sent``,
``events_lost``, ``events_doubled``. Also optional: ``guarantee``
(``at_least_once``/``exactly_once``), ``doubled_bound`` (the most events a run may
answer twice: 0 under exactly_once, the events redelivered after a crash otherwise),
``recovery_s`` (what → seconds), ``verified`` (the exactness check passed), ``notes``.
A record that breaks these rules stops the report with an error naming its file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DIR_ENV = "STREAMREC_RELIABILITY_DIR"
DEFAULT_DIR = Path("artifacts/reliability")
SUMMED = ("payloads_tried", "faults_injected", "events_sent", "events_lost", "events_doubled")
GUARANTEES = ("at_least_once", "exactly_once")


class RecordError(ValueError):
    """A reliability record is malformed; the message names the file and the field."""


def records_dir() -> Path:
    """Where records go: ``$STREAMREC_RELIABILITY_DIR`` or ``artifacts/reliability``."""
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def write_record(record: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Check ``record`` and write it as ``<name>.json`` (atomically); returns the path.
    Raises :class:`RecordError` on a malformed record (nothing is written then)."""
    entry = {**record, "recorded_at": record.get("recorded_at", time.time())}
    check_record(entry, "record")
    folder = directory or records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry['name']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def check_record(record: Any, source: str) -> None:
    """Raise :class:`RecordError` (naming ``source``) unless ``record`` follows the module's rules."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: a record must be a JSON object, not {type(record).__name__}")
    for key in ("name", "kind"):
        value = record.get(key)
        if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
            raise RecordError(f"{source}: '{key}' must be a non-empty string without '/' (got {value!r})")
    for key in (*SUMMED, "doubled_bound"):
        value = record.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RecordError(f"{source}: '{key}' must be a whole number ≥ 0 (got {value!r})")
    if record.get("guarantee") not in (None, *GUARANTEES):
        raise RecordError(f"{source}: 'guarantee' must be one of {GUARANTEES} (got {record['guarantee']!r})")
    recovery = record.get("recovery_s", {})
    if not isinstance(recovery, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in recovery.values()):
        raise RecordError(f"{source}: 'recovery_s' must map names to seconds ≥ 0 (got {recovery!r})")


def load_records(directory: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` record under ``directory``, by name; raises :class:`RecordError`."""
    if not directory.is_dir():
        raise RecordError(f"{directory}: no such directory; run the fault tests first "
                          f"(pytest tests/stream/test_faults.py) or set {DIR_ENV}")
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError as exc:
            raise RecordError(f"{path}: not JSON ({exc})") from None
        check_record(record, str(path))
        out.append(record)
    return sorted(out, key=lambda r: r["name"])


def violations(record: Mapping[str, Any]) -> list[str]:
    """What a record shows going wrong: a lost event, doubling beyond its bound, a failed check."""
    out = []
    if record.get("events_lost", 0):
        out.append(f"{record['events_lost']} events lost")
    bound = 0 if record.get("guarantee") == "exactly_once" else record.get("doubled_bound", 0)
    if record.get("events_doubled", 0) > bound:
        out.append(f"{record['events_doubled']} events doubled (bound {bound})")
    if record.get("verified") is False:
        out.append("exactness check failed")
    return out


def summarise(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over the records, each record with its violations, and an overall verdict."""
    totals = {key: sum(int(r.get(key, 0)) for r in records) for key in SUMMED}
    runs = [{**r, "violations": violations(r)} for r in records]
    return {"records": len(records), "totals": totals, "ok": bool(records) and not any(r["violations"] for r in runs),
            "runs": runs}


def markdown(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    lines = [
        "# streamrec reliability report", "",
        f"{summary['records']} runs; payloads tried {t['payloads_tried']:,}; faults injected "
        f"{t['faults_injected']:,}; events sent {t['events_sent']:,}; events lost {t['events_lost']:,}; "
        f"events doubled {t['events_doubled']:,}. Verdict: {'OK' if summary['ok'] else 'FAILED'}.", "",
        "| run | kind | guarantee | payloads | faults | events | lost | doubled (bound) | recovery (s) | exact | problems |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in summary["runs"]:
        recovery = ", ".join(f"{k} {v:.1f}" for k, v in r.get("recovery_s", {}).items()) or "–"
        exact = {True: "yes", False: "NO"}.get(r.get("verified"), "–")  # type: ignore[call-overload]
        lines.append(
            f"| {r['name']} | {r['kind']} | {r.get('guarantee', '–')} | {r.get('payloads_tried', 0):,} | "
            f"{r.get('faults_injected', 0)} | {r.get('events_sent', 0):,} | {r.get('events_lost', 0)} | "
            f"{r.get('events_doubled', 0)} ({r.get('doubled_bound', 0)}) | {recovery} | {exact} | "
            f"{'; '.join(r['violations']) or '–'} |")
    notes = [f"- **{r['name']}**: {r['notes']}" for r in summary["runs"] if r.get("notes")]
    return "\n".join([*lines, *([""] + notes if notes else []), ""])


def render(directory: Path, json_path: Path, markdown_path: Path) -> dict[str, Any]:
    """Read the records, write the JSON summary and the markdown report; returns the summary."""
    summary = summarise(load_records(directory))
    for path in (json_path, markdown_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=1))
    markdown_path.write_text(markdown(summary))
    return summary


def handle(args: argparse.Namespace) -> int:
    directory = args.dir or records_dir()
    try:
        summary = render(directory, args.json, args.markdown)
    except RecordError as exc:
        print(f"streamrec bench reliability: {exc}", file=sys.stderr)
        return 2
    print(markdown(summary))
    print(f"[reliability] wrote {args.json} and {args.markdown}")
    return 0 if summary["ok"] else 1


def register(subparsers: argparse._SubParsersAction, bench_subparsers: argparse._SubParsersAction) -> None:
    """The hook streamrec.tools.cli calls: adds ``streamrec bench reliability``."""
    p = bench_subparsers.add_parser("reliability", help="the reliability report from the fault and fuzz tests' records")
    p.add_argument("--dir", type=Path, help=f"the records (default ${DIR_ENV} or {DEFAULT_DIR})")
    p.add_argument("--json", type=Path, default=Path("var/bench/reliability.json"))
    p.add_argument("--markdown", type=Path, default=Path("var/bench/reliability.md"))
    p.set_defaults(func=handle)
