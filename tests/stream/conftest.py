"""A real worker process on the session's embedded stack, with its own topics,
Feast project and Redis database so that it shares nothing with other tests."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamrec.stream.runtime import feature_repo_dir, spawn_worker, stop_process
from streamrec.stream.settings import Settings, load_settings

WORKER_DB = 3


@dataclass
class RunningWorker:
    settings: Settings
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def where_it_stands(self, wait_s: float = 2.0) -> str:
        """For a worker that stalled: its partitions' report (SIGUSR2, stream/diagnose.py) and
        the stack of every task and thread (SIGUSR1, mode's), as its log has them."""
        if self.process.poll() is not None:
            return self.log_tail()
        before = len(self.log.read_text(errors="replace").splitlines())
        for signum in (signal.SIGUSR2, signal.SIGUSR1):
            self.process.send_signal(signum)
        time.sleep(wait_s)
        return "\n".join(self.log.read_text(errors="replace").splitlines()[before:])


def worker_settings(bootstrap_servers: str, redis_url: str, data_dir: Path, registry_dir: Path, **overrides: object) -> Settings:
    run = uuid.uuid4().hex[:8]
    base = redis_url.rpartition("/")[0]
    return load_settings(
        broker={"bootstrap_servers": bootstrap_servers, "partitions": 2},
        redis={"url": f"{base}/{WORKER_DB}"},
        topics={name: f"it-{run}.{name}" for name in ("clickstream", "dlq", "by_item", "recommendations", "metrics")},
        worker={"app_id": f"it-{run}", "data_dir": str(data_dir), "metrics_interval_s": 1.0, "id": f"w-{run}",
                "prometheus_port": 0},
        features={"project": f"it_{run}", "top_min_count": 1},
        models={"registry_dir": str(registry_dir)},
        **overrides,
    )


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return spawn_worker(settings, log)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    stop_process(process)


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with a promoted default model, trained once per test session."""
    from streamrec.models.config import ModelConfig
    from streamrec.models.pipeline import ensure_default_model

    root = tmp_path_factory.mktemp("models")
    ensure_default_model(ModelConfig(registry_dir=root))
    return root


@pytest.fixture(scope="module")
def worker(bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWorker]:
    data_dir = tmp_path_factory.mktemp("worker")
    settings = worker_settings(bootstrap_servers, redis_url, data_dir, model_registry)
    log = data_dir / "worker.log"
    process = start_worker(settings, log)
    try:
        yield RunningWorker(settings, process, log)
    finally:
        stop_worker(process)


@pytest.fixture(scope="module")
def feast_store(worker: RunningWorker):  # type: ignore[no-untyped-def]
    """Feast's own SDK on the worker's applied repo (waits for the worker to apply it)."""
    from streamrec.features.repo import feature_store

    repo_root = feature_repo_dir(worker.settings)
    for _ in range(600):
        found = list(repo_root.glob("**/feature_store.yaml"))
        if found and list(repo_root.glob("**/registry.db")):
            return feature_store(found[0].parent)
        if worker.process.poll() is not None:
            raise AssertionError(f"worker exited early:\n{worker.log_tail()}")
        asyncio.run(asyncio.sleep(0.1))
    raise AssertionError(f"feature repo never applied:\n{worker.log_tail()}")
