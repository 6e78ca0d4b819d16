"""Faults on the real stack, each ending with the exact comparison (features/verify.py).

Workers are real processes on the session's broker and redis-server: one SIGKILLed in
the middle of 20,000 events and restarted (at_least_once; exactly_once has its own test,
tests/stream/test_exactly_once.py), a rebalance under load (a second worker joins,
leaves with SIGTERM, then one is SIGKILLed), and four such join/leave cycles in a row.
Every user's and item's counts and means
must equal a recomputation from ``clickstream``; each test leaves a record for the
reliability report (tools/reliability.py, ``streamrec bench reliability``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from streamrec.features.online import RedisFeatureStore
from streamrec.tools.harness import isolated_settings, produce, start_worker, stop_worker, wait_ready
from tests.stream.faults import (
    Outcome, answered, clickstream_offsets, committed_offsets, events_applied, exact, movielens_events, paced_produce,
    recommendations, wait_for_count, wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]

FAULTS_DB = 12
PARTITIONS = 4


def _settings(bootstrap_servers: str, redis_url: str, tmp_path: Path, registry: Path, **sections: Any) -> Any:
    base = redis_url.rpartition("/")[0]
    return isolated_settings(
        bootstrap_servers, f"{base}/{FAULTS_DB}", tmp_path,
        broker={"partitions": PARTITIONS, "session_timeout_s": 6.0, "heartbeat_interval_s": 1.0,
                **sections.pop("broker", {})},
        recommend={"trigger_types": ["click"]},
        models={"registry_dir": str(registry), **sections.pop("models", {})},
        **sections,
    )


def _as(settings: Any, worker_id: str) -> Any:
    """The same settings (group, topics, store) for another worker process."""
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"id": worker_id})})


@pytest.mark.parametrize("consumer_thread", [False, True], ids=["consumer-on-the-loop", "consumer-thread"])
async def test_sigkill_mid_stream_then_restart_at_least_once_is_exact(
    consumer_thread: bool, bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path
) -> None:
    """Both ways of running Faust's consumer (``STREAMREC_WORKER__CONSUMER_THREAD``,
    stream/transport.py): on the worker's event loop, and in Faust's own thread."""
    settings = _settings(bootstrap_servers, redis_url, tmp_path, model_registry, worker={"consumer_thread": consumer_thread})
    events = movielens_events(20_000, "kill")
    items = sorted({e.item_id for e in events})  # type: ignore[misc]
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    first = start_worker(_as(settings, "first"), logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        await wait_ready(settings, store, first, logs[0], timeout_s=300)
        sending = asyncio.create_task(produce(settings, events))

        async def a_third() -> bool:
            return await events_applied(store, items) >= len(events) // 3

        await wait_until(a_third, [first], logs, "a third of the events applied")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = await events_applied(store, items)
        committed = await committed_offsets(settings, settings.worker.app_id)
        await sending
        restarted = time.monotonic()
        second = start_worker(_as(settings, "second"), logs[1])

        try:
            await wait_for_count(lambda: events_applied(store, items), len(events), [second], logs,
                                 "every event applied after the restart")
            stuck = ""
        except AssertionError as exc:  # effects lost: compared and recorded all the same
            stuck = str(exc)
        caught_up_s = time.monotonic() - restarted
        report = await exact(settings, wait_s=10 if stuck else 30)
        applied = await events_applied(store, items)
        lists, offsets = await recommendations(settings), await clickstream_offsets(settings)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if second is not None:
            stop_worker(second)
        await store.close()

    counts = answered(lists)
    sent = {e.event_id for e in events}
    by_first = {i for rec in lists if rec["worker_id"] == "first" for i in (rec["cause_event_id"], *rec["covers"])}
    redelivered = {i for i in by_first & sent if offsets[i][1] >= committed[offsets[i][0]]}
    doubled = {i for i in sent if counts[i] > 1}
    triggers = {e.event_id for e in events if e.type.value == "click"}
    name = "sigkill-restart-at-least-once" + ("-consumer-thread" if consumer_thread else "")
    outcome = Outcome(name, "at_least_once", len(events), report, applied, 1,
                      {"restart_to_caught_up": caught_up_s}, len(doubled), len(redelivered),
                      notes=f"SIGKILL after {killed_at} of {len(events)} events applied; {len(triggers - set(counts))} "
                            f"of {len(triggers)} clicks without a list; {PARTITIONS} partitions")
    outcome.record()
    assert not stuck, stuck
    assert 0 < killed_at < len(events), "the kill did not land mid-stream: nothing was tested"
    assert report.ok, report.mismatches
    assert applied == len(events)
    # at-least-once: only an event the killed worker answered after its last commit may be answered again
    assert doubled <= redelivered, sorted(doubled - redelivered)[:10]


@pytest.mark.timeout(900)  # three worker start-ups
async def test_rebalance_under_load_join_leave_and_sigkill_is_exact(
    bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path
) -> None:
    """Events flow throughout: B joins A's group and leaves (SIGTERM), then C joins and is SIGKILLed.

    One at a time, so each joiner owns partitions: when B and C joined together, Faust's
    assignor once left C none (A 2, B 2, C 0), and C could never send a list.
    """
    settings = _settings(bootstrap_servers, redis_url, tmp_path, model_registry)
    events = movielens_events(60_000, "rebalance")  # 200 s at 300 ev/s; sending stops once A has caught up
    items = sorted({e.item_id for e in events})  # type: ignore[misc]
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    logs = {name: tmp_path / f"worker-{name}.log" for name in "ABC"}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    stop = asyncio.Event()
    recovery: dict[str, float] = {}

    async def has_listed(name: str) -> bool:
        """Whether the worker sent a list (it holds partitions then)."""
        # to the end offsets: the topic never falls quiet while events flow, and an idle-timeout
        # read of it never returned (this test's "joined worker stalled" failures)
        return name in {rec["worker_id"] for rec in await recommendations(settings, idle_s=None)}

    async def join(name: str) -> None:
        workers[name] = start_worker(_as(settings, name), logs[name], loglevel="info")
        recovery[f"{name}_join_to_lists"] = await wait_until(lambda: has_listed(name), list(workers.values()),
                                                             list(logs.values()), f"lists from {name}", timeout_s=400)

    try:
        workers["A"] = start_worker(_as(settings, "A"), logs["A"], loglevel="info")
        await wait_ready(settings, store, workers["A"], logs["A"], timeout_s=300)
        sending = asyncio.create_task(paced_produce(settings, events, 300.0, stop))
        await join("B")
        stop_worker(workers.pop("B"))  # SIGTERM: B commits and leaves the group, A takes its partitions
        await join("C")
        before_kill = await events_applied(store, items)
        workers["C"].send_signal(signal.SIGKILL)
        workers.pop("C").wait(10)
        killed = time.monotonic()
        sending_at_kill = not sending.done()

        # A owns every partition once C's session times out. 3,000 more events applied (10 s of
        # sending), or all of them: when start-ups were slow the sender may be nearly done
        # (a wait for 3,000 that were never sent was this test's "no progress" failure).
        progress = min(before_kill + 3000, len(events))

        async def advanced() -> bool:
            return await events_applied(store, items) >= progress

        recovery["C_killed_to_progress"] = await wait_until(advanced, list(workers.values()), list(logs.values()),
                                                            "progress after the SIGKILL")
        stop.set()
        sent = await sending
        try:
            await wait_for_count(lambda: events_applied(store, items), sent, list(workers.values()),
                                 list(logs.values()), "every sent event applied")
            recovery["C_killed_to_caught_up"] = time.monotonic() - killed
        except AssertionError as exc:
            stuck = str(exc).splitlines()[0]  # effects lost: still compared below, and recorded
        else:
            stuck = ""
        report = await exact(settings, wait_s=10)
        applied = await events_applied(store, items)
        survivors_alive = all(process.poll() is None for process in workers.values())
    finally:
        stop.set()
        for process in workers.values():
            stop_worker(process)
        await store.close()

    outcome = Outcome("rebalance-join-leave-sigkill", "at_least_once", sent, report, applied, 3, recovery,
                      notes=f"{PARTITIONS} partitions, 300 ev/s throughout: B joins A and leaves (SIGTERM), C joins, "
                            f"C SIGKILLed after {before_kill} events applied, "
                            f"{'while events were still being sent' if sending_at_kill else 'after the last was sent'}")
    outcome.record()
    assert survivors_alive, "a surviving worker stopped"
    assert applied <= sent, f"{applied - sent} effects doubled"
    # Records lost here once (4 of 8,310): a fetch handed out after a seek, fixed in
    # stream/transport.py (_TunedConsumer.getmany, in_order); tests/stream/test_transport.py.
    assert not stuck, stuck
    assert report.ok, report.mismatches


@pytest.mark.timeout(900)
async def test_workers_joining_and_leaving_again_and_again_lose_nothing(
    bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path
) -> None:
    """Four cycles under load: a worker joins A's group and, once it lists, leaves by SIGTERM
    (even cycles) or SIGKILL (odd ones). Each cycle is two rebalances in which A keeps some
    partitions and gets others back; repeating them is what found the records Faust let slip
    past the agents around a recovery's seek (stream/transport.py), which the single
    rebalance test above caught once in several runs."""
    settings = _settings(bootstrap_servers, redis_url, tmp_path, model_registry)
    events = movielens_events(60_000, "cycles")  # sending stops after the last cycle
    items = sorted({e.item_id for e in events})  # type: ignore[misc]
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    names = [f"J{i}" for i in range(4)]
    logs = {name: tmp_path / f"worker-{name}.log" for name in ["A", *names]}
    workers: dict[str, subprocess.Popen[bytes]] = {}
    stop = asyncio.Event()
    recovery: dict[str, float] = {}
    try:
        workers["A"] = start_worker(_as(settings, "A"), logs["A"], loglevel="info")
        await wait_ready(settings, store, workers["A"], logs["A"], timeout_s=300)
        sending = asyncio.create_task(paced_produce(settings, events, 300.0, stop))
        for cycle, name in enumerate(names):
            workers[name] = start_worker(_as(settings, name), logs[name], loglevel="info")

            async def listed(name: str = name) -> bool:
                return name in {rec["worker_id"] for rec in await recommendations(settings, idle_s=None)}

            recovery[f"{name}_join_to_lists"] = await wait_until(listed, list(workers.values()), list(logs.values()),
                                                                 f"lists from {name}", timeout_s=400)
            if cycle % 2 == 0:
                stop_worker(workers.pop(name))
            else:
                workers[name].send_signal(signal.SIGKILL)
                workers.pop(name).wait(10)
            await asyncio.sleep(8)  # A takes the partitions back (a SIGKILLed member: after its session times out)
        stop.set()
        sent = await sending
        left = time.monotonic()
        await wait_for_count(lambda: events_applied(store, items), sent, list(workers.values()), list(logs.values()),
                             "every sent event applied")
        recovery["last_leave_to_caught_up"] = time.monotonic() - left
        report = await exact(settings, wait_s=10)
        applied = await events_applied(store, items)
    finally:
        stop.set()
        for process in workers.values():
            stop_worker(process)
        await store.close()

    Outcome("join-leave-cycles", "at_least_once", sent, report, applied, 2 * len(names), recovery,
            notes=f"{PARTITIONS} partitions, 300 ev/s: {len(names)} workers joined one after another, each "
                  "leaving once it listed (SIGTERM and SIGKILL in turn)").record()
    assert report.ok, report.mismatches
    assert applied == sent


def _copy_version(registry: Path, version: str, new: str) -> None:
    """A second version of the same artifact (its files, and so their sha256, unchanged)."""
    import json
    import shutil

    target = registry / "versions" / new
    shutil.copytree(registry / "versions" / version, target)
    metadata = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps({**metadata, "version": new}))


def _tamper(registry: Path, version: str) -> None:
    """Flip a byte in the middle of every model file of ``version``, as corruption or an attacker would."""
    for path in (registry / "versions" / version).glob("*.onnx"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def _point_current(registry: Path, version: str) -> None:
    """What a promote does to CURRENT, without its check: a tampered artifact reaches the workers."""
    tmp = registry / ".CURRENT.tmp"
    tmp.write_text(version + "\n")
    tmp.replace(registry / "CURRENT")


async def test_a_tampered_model_is_refused_by_its_sha256_and_the_old_one_keeps_serving(
    bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path
) -> None:
    import shutil

    registry = tmp_path / "registry"
    shutil.copytree(model_registry, registry)  # the session's registry stays as it is
    old = (registry / "CURRENT").read_text().strip()
    settings = _settings(bootstrap_servers, redis_url, tmp_path, registry, models={"poll_interval_s": 0.5})
    events = movielens_events(2400, "model")
    store = RedisFeatureStore.from_url(settings.redis.effective_url, settings.features)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)

    sent: list[Any] = []

    async def versions_of(batch: list[Any]) -> set[str]:
        """Send a batch of events; the model versions of the lists their clicks caused."""
        await produce(settings, batch)
        sent.extend(batch)
        ids = {e.event_id for e in batch if e.type.value == "click"}

        async def answered_all() -> bool:
            return ids <= set(answered(await recommendations(settings, idle_s=0.5)))

        await wait_until(answered_all, [worker], [log], "lists for every click")
        return {rec["model_version"] for rec in await recommendations(settings) if rec["cause_event_id"] in ids}

    try:
        await wait_ready(settings, store, worker, log, timeout_s=300)
        assert await versions_of(events[:400]) == {old}
        _copy_version(registry, old, "tampered")
        _tamper(registry, "tampered")
        _point_current(registry, "tampered")
        after_tamper: set[str] = set()
        start = 400
        while "refused tampered" not in log.read_text(errors="replace") and start < 1200:
            after_tamper |= await versions_of(events[start:start + 40])  # the worker polls as it ranks
            start += 40
        after_tamper |= await versions_of(events[start:start + 40])  # and after its verdict
        _copy_version(registry, old, "good-copy")
        _point_current(registry, "good-copy")
        after_good: set[str] = set()
        for start in range(1240, len(events), 40):  # the watcher does switch: the refusal was the sha256's
            after_good = await versions_of(events[start:start + 40])
            if "good-copy" in after_good:
                break
        report = await exact(settings)
        applied = await events_applied(store, sorted({e.item_id for e in sent}))
    finally:
        stop_worker(worker)
        await store.close()
    text = log.read_text(errors="replace")
    Outcome("model-artifact-tampered", "at_least_once", len(sent), report, applied, 1,
            notes="a byte flipped in every model file of a version that CURRENT then named: refused, "
                  f"the old one served ({'; '.join(line for line in text.splitlines() if 'refused' in line)[:300]})").record()
    assert after_tamper == {old}, after_tamper
    assert "refused tampered" in text and "sha256" in text
    assert "good-copy" in after_good, after_good
    assert report.ok, report.mismatches
