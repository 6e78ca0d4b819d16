"""The embedded stack: Apache Kafka (one KRaft node) and a redis-server on loopback.

``EmbeddedStack.up()`` starts exactly the services it records in ``<data_dir>/stack.json``
(PID, process start time, command line, port, data and log paths) and waits until each
answers; ``down()`` stops exactly those, after checking that each PID still belongs to
the process it started. A port already taken by anything else is an error naming the
setting to change: the stack never stops, reuses or talks over a service it did not
start (a system Redis on 6379 stays untouched). The broker's log directory stays under
``<data_dir>/broker`` across ``down``/``up``; ``reset()`` stops the stack and empties it.

Security is off by default. ``StackConfig.sasl_users`` makes the broker's listener ask
for a SCRAM-SHA-512 login (the users are created when its storage is formatted),
``redis_auth`` makes redis-server ask for a login, and ``tls`` puts both behind TLS
with certificates made for the stack under ``<data_dir>/tls`` (infra/tls.py).

Blocking calls throughout; meant for the command line, the demo and test fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import psutil

from streamrec.infra.errors import StackError
from streamrec.infra.kafka import BrokerConfig, BrokerSecurity
from streamrec.infra.services import RedisAuth, ServiceSpec, broker_spec, ensure_redis_server, redis_spec
from streamrec.infra.tls import TlsFiles, ensure_tls_files

STATE_FILE = "stack.json"


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    pid: int
    create_time: float
    port: int
    stop_grace_s: float
    cmdline: list[str]
    data_dir: str
    log: str
    started_in_s: float
    # seconds from boot to the process's start: unlike create_time (seconds since the epoch, which
    # moves when the wall clock is stepped), it identifies the process across clock corrections
    since_boot_s: float = -1.0  # -1: a record written before this field existed


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path
    broker_port: int = 19092
    controller_port: int = 19093
    redis_port: int = 16379
    broker_heap_mb: int = 256
    partitions: int = 4
    host: str = "127.0.0.1"
    start_timeout_s: float = 60.0
    sasl_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (name, password): SCRAM-SHA-512
    redis_auth: RedisAuth | None = None
    tls: bool = False

    @classmethod
    def on_free_ports(cls, data_dir: Path, **overrides: object) -> StackConfig:
        """A private stack (fixtures, benchmarks): every port one that nothing listens on now."""
        ports = {"broker_port": free_port(), "controller_port": free_port(), "redis_port": free_port()}
        return cls(data_dir=data_dir, **{**ports, **overrides})  # type: ignore[arg-type]

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.redis_port}/0"

    @property
    def broker_protocol(self) -> str:
        return BrokerSecurity(self.sasl_users, TlsFiles(self.tls_dir, "") if self.tls else None).protocol

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_file(self) -> Path | None:
        """The CA that clients must trust, when the stack runs TLS."""
        return self.tls_dir / "ca.pem" if self.tls else None


class EmbeddedStack:
    """Start, inspect and stop the services of one embedded stack."""

    def __init__(self, config: StackConfig) -> None:
        # absolute: services run with their data dir as working directory
        self.config = replace(config, data_dir=config.data_dir.resolve())
        self.state_path = config.data_dir / STATE_FILE
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started by this object: reaped on down()

    # -- public -----------------------------------------------------------------
    def up(self) -> list[ServiceRecord]:
        """Start every service not already running for this stack; idempotent."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        running = {r.name: r for r in self._alive_records()}
        records = list(running.values())
        for spec in self._specs():
            if spec.name in running:
                continue
            records.append(self._start(spec))
            self._save(records)
        return records

    def down(self) -> list[str]:
        """Stop the services this stack started; returns their names. Idempotent."""
        stopped = []
        for record in reversed(self._load()):
            if _is_same_process(record):
                _terminate(record.pid, record.stop_grace_s)
                stopped.append(record.name)
            child = self._children.pop(record.pid, None)
            if child is not None:
                stop_process(child, record.stop_grace_s)
        for child in self._children.values():  # started but not recorded: interrupted while starting
            stop_process(child, 5.0)
        self._children.clear()
        if self.state_path.exists():
            self.state_path.unlink()
        return stopped

    def stop(self, name: str) -> bool:
        """Stop one service of this stack (SIGTERM, as ``down`` does), e.g. to inject a fault;
        ``up()`` starts it again. False when it was no longer running; a name the stack
        never recorded raises :class:`StackError`."""
        records = self._load()
        record = next((r for r in records if r.name == name), None)
        if record is None:
            raise StackError(f"no service {name!r} recorded in {self.state_path} (recorded: "
                             f"{', '.join(r.name for r in records) or 'none'})")
        running = _is_same_process(record)
        if running:
            _terminate(record.pid, record.stop_grace_s)
        child = self._children.pop(record.pid, None)
        if child is not None:
            stop_process(child, record.stop_grace_s)
        self._save([r for r in records if r.name != name])
        return running

    def reset(self) -> list[str]:
        """Stop the stack and delete its data (topics, offsets, Redis files); returns what was stopped."""
        stopped = self.down()
        for name in ("broker", "redis", "tls"):
            shutil.rmtree(self.config.data_dir / name, ignore_errors=True)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        """Name → {pid, port, alive, answering} for every recorded service."""
        result: dict[str, dict[str, object]] = {}
        for record in self._load():
            alive = _is_same_process(record)
            result[record.name] = {
                "pid": record.pid,
                "port": record.port,
                "alive": alive,
                "answering": alive and port_open(self.config.host, record.port),
                "log": record.log,
                "data_dir": record.data_dir,
            }
        return result

    # -- internals --------------------------------------------------------------
    def _specs(self) -> list[ServiceSpec]:
        cfg = self.config
        broker_dir = cfg.data_dir / "broker"
        tls = ensure_tls_files(cfg.tls_dir, cfg.host) if cfg.tls else None
        broker = BrokerConfig(host=cfg.host, port=cfg.broker_port, controller_port=cfg.controller_port,
                              log_dir=broker_dir / "data", partitions=cfg.partitions, heap_mb=cfg.broker_heap_mb,
                              security=BrokerSecurity(cfg.sasl_users, tls))
        return [redis_spec(ensure_redis_server(), cfg.host, cfg.redis_port, cfg.data_dir / "redis", cfg.redis_auth, tls),
                broker_spec(broker, broker_dir)]

    def _start(self, spec: ServiceSpec) -> ServiceRecord:
        for port, setting in {spec.port: spec.port_setting, **spec.other_ports}.items():
            if port_open(self.config.host, port):
                raise StackError(
                    f"port {port} on {self.config.host} is already in use by a process streamrec did not start; "
                    f"set {setting} to a free port (the stack never stops or reuses a service it did not start)"
                )
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        if spec.prepare is not None:
            spec.prepare()
        log_path = spec.data_dir / f"{spec.name}.log"
        began = time.monotonic()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                spec.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=spec.data_dir,
                env={**os.environ, **spec.env},
                start_new_session=True,  # outlives `streamrec stack up`; stopped by PID later
            )
        self._children[proc.pid] = proc
        started = psutil.Process(proc.pid)
        record = ServiceRecord(
            name=spec.name,
            pid=proc.pid,
            create_time=started.create_time(),
            since_boot_s=_since_boot(started),
            port=spec.port,
            stop_grace_s=spec.stop_grace_s,
            cmdline=spec.argv,
            data_dir=str(spec.data_dir),
            log=str(log_path),
            started_in_s=0.0,
        )
        self._wait_ready(spec, proc, log_path)
        return ServiceRecord(**{**asdict(record), "started_in_s": round(time.monotonic() - began, 3)})

    def _wait_ready(self, spec: ServiceSpec, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{spec.name} exited with code {proc.returncode} at start; see {log_path}:\n{_tail(log_path)}")
            try:
                if spec.ready(self.config.host, spec.port):
                    return
            except StackError:  # answering, but it will never do (a refused login): stop what we started
                _terminate(proc.pid, spec.stop_grace_s)
                raise
            time.sleep(0.05)
        _terminate(proc.pid)
        raise StackError(f"{spec.name} did not answer on port {spec.port} within {self.config.start_timeout_s} s; see {log_path}")

    def _alive_records(self) -> list[ServiceRecord]:
        return [r for r in self._load() if _is_same_process(r)]

    def _load(self) -> list[ServiceRecord]:
        if not self.state_path.exists():
            return []
        return [ServiceRecord(**{"stop_grace_s": 5.0, **item}) for item in json.loads(self.state_path.read_text())]

    def _save(self, records: list[ServiceRecord]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=2))
        tmp.replace(self.state_path)


def _since_boot(proc: psutil.Process) -> float:
    """Seconds from boot to the start of ``proc``: the kernel's start time, not moved by a step of
    the wall clock (a VM restored from a snapshot, NTP), which moves ``create_time`` with it."""
    return proc.create_time() - psutil.boot_time()


def _is_same_process(record: ServiceRecord) -> bool:
    """True when ``record.pid`` is still the process we started (not a reused PID)."""
    try:
        proc = psutil.Process(record.pid)
        if record.since_boot_s >= 0:
            same = abs(_since_boot(proc) - record.since_boot_s) < 0.05
        else:
            same = abs(proc.create_time() - record.create_time) < 0.5
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """Stop a child this process started: SIGTERM (a worker then commits and flushes; the
    broker closes its logs), SIGKILL after ``grace_s``; reaps it. Never waits forever."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _terminate(pid: int, grace_s: float = 5.0) -> None:
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(grace_s)
    except psutil.Error:
        pass


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for fixtures and ad-hoc stacks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
