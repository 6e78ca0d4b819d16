"""Bad input through the real broker: 10,200 fuzzed records (tests/stream/fuzz_payloads.py)
to a running worker. Every bad one must be in the DLQ with its reason, every good one
applied exactly once (features/verify.py's exact comparison), the worker still alive,
and the counts must balance, per the worker's counters and per the topics:

    consumed = applied + dead-lettered + routed,  routed = the copies consumed again

(a routed record is a good event that a client sent to another partition than its
user's; features/routing.py copies it there, where it is applied).

A summary of the run goes to ``fuzz.json`` in the test's tmp dir, and in
``$STREAMREC_RELIABILITY_DIR`` when that is set (the reliability report reads it).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from streamrec.features.messages import ClickEvent, DeadLetter, EventType
from streamrec.features.routing import routed_from, user_partition
from streamrec.features.verify import verify
from streamrec.infra.kafka_clients import producer
from streamrec.stream.runtime import stop_process
from streamrec.stream.topics import ensure_topics
from tests.stream.accounting import counting_worker_settings, read_all, wait_for_counters
from tests.stream.conftest import RunningWorker, start_worker
from tests.stream.fuzz_payloads import COUNTS, Payload, all_payloads

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


async def _send_all(worker: RunningWorker, payloads: list[Payload]) -> list[tuple[int, int]]:
    """Batch-produce every payload as it is (key, value, partition if set); (partition,
    offset) of each, in order. Without a partition, the key picks it (murmur2)."""
    client = producer(worker.settings.broker, linger_ms=20, max_request_size=1_048_576)
    await client.start()
    try:
        topic = worker.settings.topics.clickstream
        pending = [await client.send(topic, p.value, key=p.key, partition=p.partition) for p in payloads]
        return [(meta.partition, meta.offset) for meta in [await f for f in pending]]
    finally:
        await client.stop()


def _report(path: Path, report: dict[str, Any]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "fuzz.json").write_text(json.dumps(report, indent=2, sort_keys=True))


async def test_fuzzed_records_each_applied_once_or_dead_lettered_with_their_reason(
    bootstrap_servers: str, redis_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    settings = counting_worker_settings(bootstrap_servers, redis_url, tmp_path)
    partitions = settings.broker.partitions
    await ensure_topics(settings)
    worker = RunningWorker(settings, start_worker(settings, tmp_path / "worker.log"), tmp_path / "worker.log")
    try:
        payloads = all_payloads(run=f"fz-{uuid.uuid4().hex[:6]}", base_ts=time.time(), partitions=partitions)
        verdicts = [p.verdict() for p in payloads]
        generated_s = time.monotonic() - began
        sent_at = await _send_all(worker, payloads)
        good = verdicts.count("applied")
        bad = len(payloads) - good
        routed = sum(1 for p in payloads if p.partition is not None)
        assert routed == COUNTS["wrong_partition"] and bad > len(payloads) / 2

        # the worker must get through all of it, copies included, and still take a new event
        total = len(payloads) + routed
        await wait_for_counters(worker, lambda c: c.get("events_in", 0) >= total, timeout_s=150)
        last = ClickEvent(event_id=f"after-{uuid.uuid4().hex}", user_id="after-fuzz", item_id="i1",
                          type=EventType.VIEW, ts=datetime.now(timezone.utc))
        await _send_all(worker, [Payload("real", b"after-fuzz", last.to_bytes())])
        seen = await wait_for_counters(worker, lambda c: c.get("events_valid", 0) >= good + 1, timeout_s=60)
        processed_s = time.monotonic() - began

        # the worker's counters: consumed = applied + DLQ + routed, by reason as the schema says
        reasons = Counter(v for v in verdicts if v != "applied")
        assert seen["events_in"] == total + 1
        assert (seen["events_valid"], seen["dlq"], seen.get("routed", 0)) == (good + 1, bad, routed)
        assert seen["events_in"] == seen["events_valid"] + seen["dlq"] + seen["routed"]
        assert seen.get("skipped_duplicate", 0) == seen.get("skipped_late", 0) == 0
        assert {name[4:]: n for name, n in seen.items() if name.startswith("dlq_")} == dict(reasons)

        # the topics: each bad record's letter (its reason, its bytes, its key), once
        letters = {}
        for record in await read_all(settings, settings.topics.dlq):
            letter = DeadLetter.model_validate_json(record.value)
            assert (letter.partition, letter.offset) not in letters, "dead-lettered twice"
            letters[(letter.partition, letter.offset)] = (letter, record.key)
        assert len(letters) == bad
        for payload, verdict, at in zip(payloads, verdicts, sent_at):
            if verdict == "applied":
                assert at not in letters, (payload, letters.get(at))
                continue
            letter, key = letters[at]
            assert (letter.reason, letter.raw_payload(), key) == (verdict, payload.value, payload.key)

        # ... and each routed one copied once to its user's partition, naming the original
        clicks = await read_all(settings, settings.topics.clickstream)
        assert len(clicks) == total + 1
        copies = {routed_from(r.headers): r for r in clicks if routed_from(r.headers) is not None}
        wrong = {at: p for p, at in zip(payloads, sent_at) if p.partition is not None}
        assert set(copies) == set(wrong)
        for at, copy in copies.items():
            assert (copy.key, copy.value) == (wrong[at].key, wrong[at].value)
            assert copy.partition == user_partition(copy.key.decode(), partitions) != at[0]

        # every good event applied exactly once: counts and means per user, item and in all
        report = await verify(settings, wait_s=30)
        assert report.ok, report.mismatches
        assert (report.records, report.invalid, report.routed) == (total + 1, bad, routed)
        assert (report.events_applied, report.repeated, report.late) == (good + 1, 0, 0)
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        stop_process(worker.process)

    summary = {  # the record layout tools/reliability.py reads: name, kind and the summed counts
        "name": "fuzz",
        "kind": "fuzz",
        "guarantee": settings.broker.processing_guarantee,
        "payloads_tried": len(payloads),
        "events_sent": good,
        "events_lost": good + 1 - report.events_applied,
        "events_doubled": seen["events_valid"] - (good + 1),
        "verified": report.ok,
        "recorded_at": time.time(),
        "notes": f"{len(payloads)} fuzzed records through the broker: {bad} dead-lettered with the schema's reason, "
                 f"{good} applied once ({routed} of them via their user's partition), worker alive after",
        "test": "tests/stream/test_bad_input.py",
        "payloads": len(payloads),
        "by_category": {c: n for c, n in COUNTS.items() if n},
        "good": good,
        "bad": bad,
        "dlq_by_reason": dict(sorted(reasons.items())),
        "routed_to_their_users_partition": routed,
        "applied": report.events_applied,
        "applied_includes_one_event_sent_after_the_fuzz": True,
        "worker_counters": {k: seen[k] for k in sorted(seen) if k in ("events_in", "events_valid", "dlq", "routed")},
        "verify": {"ok": report.ok, "records": report.records, "invalid": report.invalid, "users": report.users,
                   "items": report.items},
        "worker_alive_after": True,
        "partitions": partitions,
        "seconds": {"generate": round(generated_s, 1), "until_processed": round(processed_s, 1),
                    "total": round(time.monotonic() - began, 1)},
    }
    _report(tmp_path, summary)
    if os.environ.get("STREAMREC_RELIABILITY_DIR"):
        _report(Path(os.environ["STREAMREC_RELIABILITY_DIR"]), summary)
    assert json.loads((tmp_path / "fuzz.json").read_text())["payloads"] >= 10_000
