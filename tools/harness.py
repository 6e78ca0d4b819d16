"""A real worker process on given settings, for the benchmark and integration tests.

The worker is started the way a user starts it (``python -m streamrec.stream.cli worker`` with
the settings in the environment), so what is measured or tested is the real thing.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from streamrec.features.messages import ClickEvent, EventType
from streamrec.features.online import RedisFeatureStore
from streamrec.features.schema import USER_VIEW


def isolated_settings(bootstrap: str, redis_url: str, data_dir: Path, **overrides: Any) -> Any:
    """Settings with their own topics, consumer group, Feast project and worker id."""
    from streamrec.stream.settings import load_settings

    run = uuid.uuid4().hex[:8]
    sections: dict[str, dict[str, Any]] = {
        "broker": {"bootstrap_servers": bootstrap},
        "redis": {"url": redis_url},
        "topics": {n: f"feat-{run}.{n}" for n in ("clickstream", "dlq", "by_item", "recommendations", "metrics")},
        "worker": {"app_id": f"feat-{run}", "data_dir": str(data_dir), "id": f"feat-{run}", "metrics_interval_s": 5.0},
        "features": {"project": f"feat_{run}"},
        "recommend": {"trigger_types": []},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return load_settings(**sections)


def start_worker(settings: Any, log: Path, loglevel: str = "warning") -> subprocess.Popen[bytes]:
    from streamrec.stream.runtime import spawn_worker

    return spawn_worker(settings, log, loglevel=loglevel)


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    from streamrec.stream.runtime import stop_process

    stop_process(worker, grace_s=30)


async def wait_ready(
    settings: Any, store: RedisFeatureStore, worker: subprocess.Popen[bytes], log: Path, timeout_s: float = 150
) -> None:
    """Send a probe event every few seconds until the worker has written its row."""
    from streamrec.infra.kafka_clients import producer
    from streamrec.stream.topics import ensure_topics

    await ensure_topics(settings)
    client = producer(settings.broker)
    await client.start()
    try:
        for attempt in range(int(timeout_s / 0.25)):
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited:\n{log.read_text(errors='replace')[-3000:]}")
            if attempt % 20 == 0:
                probe = ClickEvent(event_id=f"probe-{attempt}", user_id="probe", item_id="probe",
                                   type=EventType.VIEW, ts=datetime.now(timezone.utc))
                await client.send_and_wait(settings.topics.clickstream, probe.to_bytes(), key=b"probe")
            if (await store.read_batch(USER_VIEW, ["probe"], ["event_count"]))[0]["event_count"]:
                return
            await asyncio.sleep(0.25)
    finally:
        await client.stop()
    raise RuntimeError(f"worker wrote no feature row in {timeout_s} s:\n{log.read_text(errors='replace')[-3000:]}")


async def produce(settings: Any, events: list[ClickEvent], **producer_options: Any) -> None:
    """Send events to ``clickstream`` keyed by user, in order, and wait for the acks."""
    from streamrec.infra.kafka_clients import producer

    client = producer(settings.broker, **producer_options)
    await client.start()
    try:
        for event in events:
            await client.send(settings.topics.clickstream, event.to_bytes(), key=event.user_id.encode())
        await client.flush()
    finally:
        await client.stop()
