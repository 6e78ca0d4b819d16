"""The embedded Apache Kafka broker: a single KRaft node (broker + controller) on loopback.

Its jars come from Maven Central at install time (``infra/kafka/pom.xml``, resolved by
``infra/install.sh`` into ``.kafka/<version>/libs``, outside git). This module finds
Java, writes ``server.properties`` tuned for a 2-core machine and for latency, formats
the log directory once (``kafka.tools.StorageTool``), and builds the ``java`` command
line. Readiness is a real Kafka Metadata request that lists the broker.

Blocking calls; used by ``infra.stack``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.errors import StackError

KAFKA_VERSION = "4.1.1"  # the version pinned in infra/kafka/pom.xml and docker-compose.yml
MIN_JAVA = 17
KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
REPO_ROOT = Path(__file__).resolve().parent.parent
META_PROPERTIES = "meta.properties"


@dataclass(frozen=True)
class BrokerConfig:
    """What the embedded broker's ``server.properties`` is made from."""

    host: str
    port: int
    controller_port: int
    log_dir: Path
    partitions: int = 4
    heap_mb: int = 256


def libs_dir() -> Path:
    """Where infra/install.sh put the broker's jars (``STREAMREC_KAFKA_LIBS`` overrides)."""
    override = os.environ.get("STREAMREC_KAFKA_LIBS")
    return Path(override) if override else REPO_ROOT / ".kafka" / KAFKA_VERSION / "libs"


def classpath() -> str:
    libs = libs_dir()
    if not list(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise StackError(
            f"Apache Kafka {KAFKA_VERSION}'s jars are not in {libs}: run `bash infra/install.sh` "
            "(it resolves infra/kafka/pom.xml from Maven Central with mvn; needs Maven and Java 17+)"
        )
    return f"{libs}/*"


def find_java() -> str:
    """A ``java`` of version 17 or newer: ``$JAVA_HOME/bin/java`` first, then PATH."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(str(shutil.which("java")))
    found = []
    for java in candidates:
        version = java_major_version(java)
        if version is not None and version >= MIN_JAVA:
            return java
        found.append(f"{java} (version {version})")
    raise StackError(
        f"the embedded Kafka broker needs Java {MIN_JAVA} or newer; found "
        f"{', '.join(found) if found else 'no java on PATH or JAVA_HOME'}. Install it "
        "(Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) or set JAVA_HOME"
    )


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_version(out)


def parse_java_version(version_output: str) -> int | None:
    """Major version from ``java -version`` output: '"17.0.15"' → 17, '"1.8.0_392"' → 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def server_properties(cfg: BrokerConfig) -> str:
    """``server.properties`` for one loopback node that is both broker and controller.

    Tuned for 2 cores and latency: internal topics with one partition and replication 1,
    no initial rebalance delay, two network and I/O threads, a 16 MiB cleaner buffer
    (the default takes 128 MiB of a small heap), and a cleaner that looks every second.
    """
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cfg.log_dir),
        "num.partitions": str(cfg.partitions),
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.backoff.ms": "1000",
        "auto.create.topics.enable": "true",
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def new_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, no padding, not starting
    with "-" (StorageTool would read it as an option; Kafka's own ids avoid it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def is_formatted(log_dir: Path) -> bool:
    return (log_dir / META_PROPERTIES).exists()


def format_log_dir(java: str, properties: Path, log_dir: Path) -> None:
    """Format the KRaft log directory once; a formatted one is left as it is."""
    if is_formatted(log_dir):
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [java, "-Xmx128m", "-cp", classpath(), f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(properties)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"formatting the Kafka log directory {log_dir} failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")


def broker_argv(java: str, properties: Path, cfg: BrokerConfig, logs_dir: Path) -> list[str]:
    return [
        java, f"-Xms{cfg.heap_mb}m", f"-Xmx{cfg.heap_mb}m",
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        "-cp", classpath(), "kafka.Kafka", str(properties),
    ]


def metadata_lists_broker(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when a Kafka Metadata request to host:port answers with at least one broker."""
    try:  # cheap first: while the port is closed the client would log an error per try
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return asyncio.run(_metadata_lists_broker(host, port, timeout_s))


async def _metadata_lists_broker(host: str, port: int, timeout_s: float) -> bool:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=int(timeout_s * 1000),
                            connections_max_idle_ms=60_000)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    finally:
        await client.close()
