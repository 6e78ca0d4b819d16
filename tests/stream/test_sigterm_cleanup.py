"""A command that starts services stops them on SIGTERM as on Ctrl-C (stream/signals.py).

A real ``streamrec demo`` and a real ``streamrec bench broker`` are started, each with its
own broker and redis-server on free ports; once their services run, the command gets
one SIGTERM, and every process it had started (broker JVM, redis-server, worker, gateway,
their children) must be gone when it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from streamrec.infra.stack import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]


def _descendants(process: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _names(processes: list[psutil.Process]) -> set[str]:
    out = set()
    for p in processes:
        try:
            out.add(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return out


def _wait_for(process: subprocess.Popen[bytes], log: Path, marks: list[str], expect: list[str],
              timeout_s: float = 240) -> list[psutil.Process]:
    """Wait until the log shows ``marks`` and processes named like ``expect`` run under
    ``process``; returns every process it started by then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        started = _descendants(process)
        names = _names(started)
        if all(m in text for m in marks) and all(any(e in n for n in names) for e in expect):
            return started
        if process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) before {marks} / {expect}:\n{text[-3000:]}")
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout_s} s: {marks} / {expect}\n{log.read_text(errors='replace')[-3000:]}")


def _sigterm_stops_everything(command: list[str], env: dict[str, str], log: Path, marks: list[str],
                              expect: list[str]) -> None:
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "streamrec.tools.cli", *command], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    started: list[psutil.Process] = []
    try:
        _wait_for(process, log, marks, expect)
        time.sleep(2.0)
        started = _descendants(process)
        process.send_signal(signal.SIGTERM)
        process.wait(180)
        time.sleep(1.0)  # orphans are reaped by init
        alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"left running after SIGTERM: {_names(alive)}\n{log.read_text(errors='replace')[-2000:]}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for p in started:  # whatever the assertion found, nothing outlives the test
            try:
                p.kill()
            except psutil.Error:
                pass


def _own_stack_env(tmp_path: Path, registry: Path) -> dict[str, str]:
    broker, controller, redis = free_port(), free_port(), free_port()
    return {
        **os.environ,
        "STREAMREC_STACK__DATA_DIR": str(tmp_path / "stack"),
        "STREAMREC_STACK__BROKER_PORT": str(broker),
        "STREAMREC_STACK__CONTROLLER_PORT": str(controller),
        "STREAMREC_STACK__REDIS_PORT": str(redis),
        "STREAMREC_BROKER__BOOTSTRAP_SERVERS": f"127.0.0.1:{broker}",
        "STREAMREC_REDIS__URL": f"redis://127.0.0.1:{redis}/0",
        "STREAMREC_WORKER__DATA_DIR": str(tmp_path / "worker"),
        "STREAMREC_GATEWAY__PORT": "0",
        "STREAMREC_GATEWAY__DATA_DIR": str(tmp_path / "gateway"),
        "STREAMREC_MODELS__REGISTRY_DIR": str(registry),
    }


def test_sigterm_to_a_demo_stops_its_broker_redis_worker_and_gateway(tmp_path: Path, model_registry: Path) -> None:
    _sigterm_stops_everything(["demo", "--rate", "50"], _own_stack_env(tmp_path, model_registry), tmp_path / "demo.log",
                              ["[demo] broker ready", "[demo] starting the gateway"],
                              ["redis-server", "java", "streamrec.stream.cli worker"])


def test_sigterm_to_a_benchmark_stops_its_broker_and_redis(tmp_path: Path) -> None:
    _sigterm_stops_everything(["bench", "broker", "--rate", "100", "--duration", "120", "--linger", "0",
                               "--json", str(tmp_path / "broker.json")], dict(os.environ), tmp_path / "bench.log",
                              [], ["redis-server", "java"])
