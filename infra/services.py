"""How to start each embedded service and how to tell that it answers.

Each ``*_spec`` returns a ``ServiceSpec``: the argv, extra environment, the port and a
readiness probe. Finding or installing a missing binary happens here too, with an
error that says how to install it where streamrec may not.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra.errors import StackError
from infra.kafka import BrokerConfig, broker_argv, find_java, format_log_dir, metadata_lists_broker, server_properties

@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    port: int
    port_setting: str
    data_dir: Path
    ready: Callable[[str, int], bool]
    env: dict[str, str] = field(default_factory=dict)
    other_ports: dict[int, str] = field(default_factory=dict)  # further ports it listens on → their settings
    prepare: Callable[[], None] | None = None  # run once before the process starts (write config, format storage)
    stop_grace_s: float = 5.0  # SIGTERM → SIGKILL after this long


def redis_spec(binary: str, host: str, port: int, data_dir: Path) -> ServiceSpec:
    argv = [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(data_dir), "--protected-mode", "yes"]
    return ServiceSpec("redis", argv, port, "STREAMREC_STACK__REDIS_PORT", data_dir, _redis_answers)


def broker_spec(cfg: BrokerConfig, data_dir: Path) -> ServiceSpec:
    """Apache Kafka in KRaft mode; its log directory lives under ``data_dir`` and survives restarts."""
    java = find_java()
    properties = data_dir / "server.properties"

    def prepare() -> None:
        properties.write_text(server_properties(cfg))
        format_log_dir(java, properties, cfg.log_dir)

    return ServiceSpec(
        "broker", broker_argv(java, properties, cfg, data_dir / "logs"), cfg.port, "STREAMREC_STACK__BROKER_PORT",
        data_dir, metadata_lists_broker,
        other_ports={cfg.controller_port: "STREAMREC_STACK__CONTROLLER_PORT"},
        prepare=prepare,
        stop_grace_s=30.0,  # a controlled shutdown flushes and closes the logs: a clean restart
    )


def ensure_redis_server() -> str:
    """Path of ``redis-server``; installs it with apt-get on Debian/Ubuntu when run as root."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get") and Path("/etc/debian_version").exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "redis-server"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True, check=False)
        found = shutil.which("redis-server")
        if found:
            return found
    raise StackError(
        "redis-server is not installed. Install it: Debian/Ubuntu `sudo apt-get install redis-server`, "
        "macOS `brew install redis`, or point STREAMREC_REDIS__URL at a Redis you run yourself"
    )


def _redis_answers(host: str, port: int) -> bool:
    return _exchange(host, port, b"PING\r\n").startswith(b"+PONG")


def _exchange(host: str, port: int, request: bytes) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64)
    except OSError:
        return b""
