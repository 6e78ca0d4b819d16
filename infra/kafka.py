"""The embedded Apache Kafka broker: a single KRaft node (broker + controller) on loopback.

Its jars come from Maven Central at install time (``infra/kafka/pom.xml``, resolved by
``infra/install.sh`` into ``.kafka/<version>/libs``, outside git). This module finds
Java, writes ``server.properties`` tuned for a 2-core machine and for latency, formats
the log directory once (``kafka.tools.StorageTool``), and builds the ``java`` command
line. Readiness is a real Kafka Metadata request that lists the broker.

Security is optional (``BrokerSecurity``): SCRAM-SHA-512 users, created when the log
directory is formatted (``StorageTool --add-scram``), and/or TLS with the stack's own
certificates (``infra/tls.py``) on the client listener. The controller listener stays
PLAINTEXT on loopback; the default stack is PLAINTEXT throughout.

Blocking calls; used by ``streamrec.infra.stack``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamrec.infra.errors import StackError
from streamrec.infra.tls import TlsFiles

KAFKA_VERSION = "4.1.1"  # the version pinned in infra/kafka/pom.xml and docker-compose.yml
MIN_JAVA = 17
KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
REPO_ROOT = Path(__file__).resolve().parent.parent
META_PROPERTIES = "meta.properties"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USERS_FILE = "scram-users"  # beside the formatted log directory: which users the format created


@dataclass(frozen=True)
class BrokerSecurity:
    """How clients reach the broker: SCRAM users (name, password) and/or TLS; neither is PLAINTEXT."""

    scram_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tls: TlsFiles | None = None

    @property
    def protocol(self) -> str:
        if self.scram_users:
            return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"
        return "SSL" if self.tls else "PLAINTEXT"

    def client_options(self) -> dict[str, Any]:
        """aiokafka options of a client that logs in as the first user and trusts the stack's CA."""
        import ssl

        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls is not None:
            options["ssl_context"] = ssl.create_default_context(cafile=str(self.tls.ca))
        if self.scram_users:
            name, password = self.scram_users[0]
            options.update(sasl_mechanism=SCRAM_MECHANISM, sasl_plain_username=name, sasl_plain_password=password)
        return options


@dataclass(frozen=True)
class BrokerConfig:
    """What the embedded broker's ``server.properties`` is made from."""

    host: str
    port: int
    controller_port: int
    log_dir: Path
    partitions: int = 4
    heap_mb: int = 256
    security: BrokerSecurity = BrokerSecurity()


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
    With ``cfg.security`` the client listener (named after its protocol) asks for it; the
    file then holds the broker's own SCRAM login and keystore password: write it 0600.
    """
    protocol = cfg.security.protocol
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
        "listeners": f"{protocol}://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"{protocol}://{cfg.host}:{cfg.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": protocol,
        "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
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
        **_security_properties(cfg.security),
    }
    return "".join(f"{key}={value}\n" for key, value in props.items())


def _security_properties(security: BrokerSecurity) -> dict[str, str]:
    props: dict[str, str] = {}
    if security.scram_users:
        name, password = security.scram_users[0]  # the broker's own login on its listener
        listener = security.protocol.lower()
        props.update({
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.{listener}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config":
                f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{name}" password="{password}";',
        })
    if security.tls is not None:
        tls = security.tls
        props.update({
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(tls.keystore),
            "ssl.keystore.password": tls.keystore_password,
            "ssl.key.password": tls.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.client.auth": "none",
        })
    return props


def scram_argument(name: str, password: str) -> str:
    """StorageTool's ``--add-scram`` value; a name or password it cannot quote is refused."""
    for what, value in (("user name", name), ("password", password)):
        if not value or any(c in value for c in '"\\\n\r'):
            raise StackError(f"a SCRAM {what} must be non-empty, without quotes, backslashes or line breaks")
    return f'{SCRAM_MECHANISM}=[name="{name}",password="{password}"]'


def new_cluster_id() -> str:
    """A KRaft cluster id: URL-safe base64 of 16 random bytes, no padding, not starting
    with "-" (StorageTool would read it as an option; Kafka's own ids avoid it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def is_formatted(log_dir: Path) -> bool:
    return (log_dir / META_PROPERTIES).exists()


def format_log_dir(java: str, properties: Path, log_dir: Path, scram_users: tuple[tuple[str, str], ...] = ()) -> None:
    """Format the KRaft log directory once, creating ``scram_users``; a formatted one is left
    as it is (its SCRAM users cannot change: StackError if others are asked for)."""
    users_file = log_dir.parent / SCRAM_USERS_FILE
    wanted = sorted(name for name, _ in scram_users)
    if is_formatted(log_dir):
        created = users_file.read_text().split() if users_file.exists() else []
        if not set(wanted) <= set(created):
            raise StackError(
                f"the broker's storage {log_dir} was formatted with SCRAM users {created or 'none'}, not {wanted}: "
                "SCRAM users are created when the storage is formatted. Run `streamrec stack reset` "
                "(it deletes the stack's topics) or set STREAMREC_BROKER__SASL_USERNAME to one of them"
            )
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [java, "-Xmx128m", "-cp", classpath(), f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(properties)]
    for name, password in scram_users:
        argv += ["--add-scram", scram_argument(name, password)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise StackError(f"formatting the Kafka log directory {log_dir} failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")
    users_file.write_text("".join(f"{name}\n" for name in wanted))


def broker_argv(java: str, properties: Path, cfg: BrokerConfig, logs_dir: Path) -> list[str]:
    return [
        java, f"-Xms{cfg.heap_mb}m", f"-Xmx{cfg.heap_mb}m",
        "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={logs_dir}", f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
        "-cp", classpath(), "kafka.Kafka", str(properties),
    ]


def metadata_lists_broker(host: str, port: int, timeout_s: float = 2.0, security: BrokerSecurity = BrokerSecurity()) -> bool:
    """True when a Kafka Metadata request to host:port answers with at least one broker.

    Logs in as ``security`` asks; a refused login raises StackError (waiting would not help).
    """
    try:  # cheap first: while the port is closed the client would log an error per try
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return asyncio.run(_metadata_lists_broker(host, port, timeout_s, security))


async def _metadata_lists_broker(host: str, port: int, timeout_s: float, security: BrokerSecurity) -> bool:
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError, SaslAuthenticationFailed
    from aiokafka.protocol.metadata import MetadataRequest

    conn = None
    try:  # one connection of our own: aiokafka's bootstrap() would only log a refused login
        conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(timeout_s * 1000),
                                                  **security.client_options()), timeout_s)
        metadata = await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
        return bool(metadata.brokers)
    except SaslAuthenticationFailed as exc:
        raise StackError(f"the broker refused the SCRAM login of STREAMREC_BROKER__SASL_USERNAME / "
                         f"STREAMREC_BROKER__SASL_PASSWORD ({exc}); its users were created when its storage was "
                         "formatted: `streamrec stack reset` makes them again") from None
    except (KafkaError, OSError, asyncio.TimeoutError):
        return False
    finally:
        if conn is not None:
            conn.close()
