"""aiokafka clients built from settings, for the tools around the worker (replay,
tail, benchmarks, tests). The worker itself talks to Kafka through Faust."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.settings import BrokerSettings


def client_options(broker: BrokerSettings) -> dict[str, Any]:
    """Connection and security options shared by producers and consumers."""
    options: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "security_protocol": broker.security_protocol,
    }
    if broker.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(cafile=str(broker.ssl_cafile) if broker.ssl_cafile else None)
    if broker.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = broker.sasl_mechanism
        options["sasl_plain_username"] = broker.sasl_username
        options["sasl_plain_password"] = broker.sasl_password.get_secret_value() if broker.sasl_password else None
    return options


def producer(broker: BrokerSettings, **overrides: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(broker), linger_ms=overrides.pop("linger_ms", 5), **overrides)


def consumer(broker: BrokerSettings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer of ``topics``; without a group_id it reads from the latest offsets.

    It reads committed data only (``read_committed``), so with ``exactly_once`` it never
    sees the output of a transaction that a crashed worker aborted.
    """
    defaults: dict[str, Any] = {
        "fetch_max_wait_ms": broker.fetch_max_wait_ms,
        "auto_offset_reset": "latest",
        "enable_auto_commit": False,
        "session_timeout_ms": int(broker.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(broker.heartbeat_interval_s * 1000),
        "rebalance_timeout_ms": int(broker.rebalance_timeout_s * 1000),
        # Only what committed transactions wrote (exactly_once); without transactions it reads the same.
        "isolation_level": "read_committed",
    }
    return AIOKafkaConsumer(*topics, **client_options(broker), **{**defaults, **overrides})
