"""What the accounting tests read back: a worker's cumulative counters (its Prometheus
endpoint, stream/prometheus.py) and whole topics from the beginning."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamrec.features.verify import _read as read_from_start
from streamrec.infra.stack import free_port
from streamrec.stream.settings import Settings
from tests.stream.conftest import RunningWorker, worker_settings


def counting_worker_settings(bootstrap_servers: str, redis_url: str, data_dir: Path, **worker: Any) -> Settings:
    """A features-only worker (no ranking: these tests are about what is applied) that
    serves its counters on a free port."""
    settings = worker_settings(bootstrap_servers, redis_url, data_dir, data_dir / "models",
                               recommend={"trigger_types": []})
    update = {"role": "features", "prometheus_port": free_port(), **worker}
    return settings.model_copy(update={"worker": settings.worker.model_copy(update=update)})


def counters(settings: Settings) -> dict[str, int]:
    """The worker's ``streamrec_worker_count`` counters by name; {} while it does not answer."""
    url = f"http://{settings.worker.prometheus_host}:{settings.worker.prometheus_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "streamrec_worker_count":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["name"]] = int(sample.value)
    return out


async def wait_for_counters(worker: RunningWorker, done: Callable[[dict[str, int]], bool],
                            timeout_s: float) -> dict[str, int]:
    """Poll the counters until ``done`` holds for them; fails if the worker exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        assert worker.process.poll() is None, f"worker exited:\n{worker.log_tail()}"
        seen = counters(worker.settings)
        if seen and done(seen):
            return seen
        await asyncio.sleep(0.5)
    raise AssertionError(f"counters never got there in {timeout_s} s: {seen}\n{worker.log_tail()}\n"
                         f"--- where it stands ---\n{worker.where_it_stands()}")


async def read_all(settings: Settings, topic: str, idle_s: float = 2.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (aiokafka ConsumerRecords), read as verify reads."""
    return await read_from_start(settings, topic, idle_s)
