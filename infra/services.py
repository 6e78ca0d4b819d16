"""How to start each embedded service and how to tell that it answers.

Each ``*_spec`` returns a ``ServiceSpec``: the argv, extra environment, the port and a
readiness probe. Finding or installing a missing binary happens here too, with an
error that says how to install it where streamrec may not.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.infra.errors import StackError
from streamrec.infra.kafka import BrokerConfig, broker_argv, find_java, format_log_dir, metadata_lists_broker, server_properties
from streamrec.infra.tls import TlsFiles

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


@dataclass(frozen=True)
class RedisAuth:
    """The one Redis user clients log in as: ``default`` (plain ``requirepass``) or a named ACL user."""

    password: str = field(repr=False)
    username: str = "default"


def redis_spec(binary: str, host: str, port: int, data_dir: Path,
               auth: RedisAuth | None = None, tls: TlsFiles | None = None) -> ServiceSpec:
    """redis-server on loopback; with ``auth`` every command needs a login, with ``tls``
    the port speaks TLS only. Secrets go in a 0600 config file, never on the command line."""
    config = data_dir / "redis.conf"

    def prepare() -> None:
        config.write_text(_redis_config(host, port, data_dir, auth, tls))
        os.chmod(config, 0o600)

    def ready(host: str, port: int) -> bool:
        return _redis_answers(host, port, tls)

    return ServiceSpec("redis", [binary, str(config)], port, "STREAMREC_STACK__REDIS_PORT", data_dir, ready,
                       prepare=prepare)


def _redis_config(host: str, port: int, data_dir: Path, auth: RedisAuth | None, tls: TlsFiles | None) -> str:
    lines = [f"bind {host}", "save \"\"", "appendonly no", f"dir {data_dir}", "protected-mode yes"]
    if tls is None:
        lines.append(f"port {port}")
    else:
        lines += ["port 0", f"tls-port {port}", f"tls-cert-file {tls.cert}", f"tls-key-file {tls.key}",
                  f"tls-ca-cert-file {tls.ca}", "tls-auth-clients no"]
    if auth is not None:  # the password only as its SHA-256 (ACL "#<hash>")
        digest = hashlib.sha256(auth.password.encode()).hexdigest()
        if auth.username != "default":
            lines.append("user default off")
        lines.append(f"user {auth.username} on resetpass #{digest} ~* &* +@all")
    return "".join(line + "\n" for line in lines)


def broker_spec(cfg: BrokerConfig, data_dir: Path) -> ServiceSpec:
    """Apache Kafka in KRaft mode; its log directory lives under ``data_dir`` and survives restarts."""
    java = find_java()
    properties = data_dir / "server.properties"

    def prepare() -> None:
        properties.touch(mode=0o600)
        os.chmod(properties, 0o600)  # it holds the broker's own SCRAM login and keystore password
        properties.write_text(server_properties(cfg))
        format_log_dir(java, properties, cfg.log_dir, cfg.security.scram_users)

    def ready(host: str, port: int) -> bool:
        return metadata_lists_broker(host, port, security=cfg.security)

    return ServiceSpec(
        "broker", broker_argv(java, properties, cfg, data_dir / "logs"), cfg.port, "STREAMREC_STACK__BROKER_PORT",
        data_dir, ready,
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


def _redis_answers(host: str, port: int, tls: TlsFiles | None = None) -> bool:
    """A PING answered, or refused for want of a login (the server is up either way)."""
    return _exchange(host, port, b"PING\r\n", tls).startswith((b"+PONG", b"-NOAUTH"))


def _exchange(host: str, port: int, request: bytes, tls: TlsFiles | None = None) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=0.5) as raw:
            sock = raw if tls is None else ssl.create_default_context(cafile=str(tls.ca)).wrap_socket(raw, server_hostname=host)
            with sock:
                sock.sendall(request)
                return sock.recv(64)
    except OSError:
        return b""
