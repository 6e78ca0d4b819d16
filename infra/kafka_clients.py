"""aiokafka clients built from settings, for the tools around the worker (replay,
tail, benchmarks, tests). The worker itself talks to Kafka through Faust, with the
same security settings (``faust_credentials``, used by stream/app.py). In the bottom
layer, with the broker settings they are built from, so every layer may open one."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamrec.infra.settings import BrokerSettings, SettingsError


def client_options(broker: BrokerSettings) -> dict[str, Any]:
    """Connection and security options shared by producers and consumers."""
    options: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "security_protocol": broker.security_protocol,
    }
    if broker.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(broker)
    if broker.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = broker.sasl_mechanism
        options["sasl_plain_username"] = broker.sasl_username
        options["sasl_plain_password"] = broker.sasl_password.get_secret_value() if broker.sasl_password else None
    return options


def ssl_context(broker: BrokerSettings) -> ssl.SSLContext:
    """A client TLS context trusting ``ssl_cafile`` (the system's CAs without it);
    an unreadable file is a SettingsError naming the setting."""
    try:
        return ssl.create_default_context(cafile=str(broker.ssl_cafile) if broker.ssl_cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"bad setting STREAMREC_BROKER__SSL_CAFILE: cannot read {broker.ssl_cafile} ({exc})") from None


def faust_credentials(broker: BrokerSettings) -> Any:
    """Faust's ``broker_credentials`` for these settings (``None`` for PLAINTEXT)."""
    import faust

    protocol = broker.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(broker))
    return faust.SASLCredentials(
        username=broker.sasl_username,
        password=broker.sasl_password.get_secret_value() if broker.sasl_password else None,
        mechanism=broker.sasl_mechanism,
        ssl_context=ssl_context(broker) if protocol == "SASL_SSL" else None,
    )


async def check_login(broker: BrokerSettings, timeout_s: float = 10.0) -> None:
    """Connect to the first bootstrap server as every client will; a refused login or an
    untrusted certificate raises SettingsError naming the setting to fix."""
    import asyncio

    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
    from aiokafka.protocol.metadata import MetadataRequest

    from streamrec.infra.tls import handshake

    host, _, port = broker.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = {k: v for k, v in client_options(broker).items() if k != "bootstrap_servers"}
    conn = AIOKafkaConnection(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options)
    try:
        if "ssl_context" in options:  # the certificate first, outside asyncio (infra/tls.py)
            handshake(host, int(port), options["ssl_context"], timeout_s)
        await asyncio.wait_for(conn.connect(), timeout_s)
        # a request too: a listener that wants a login it did not get closes the connection then
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
    except SaslAuthenticationFailed as exc:
        raise SettingsError(f"bad setting STREAMREC_BROKER__SASL_PASSWORD: the broker at {host}:{port} refused the "
                            f"{broker.sasl_mechanism} login of {broker.sasl_username!r} "
                            f"(STREAMREC_BROKER__SASL_USERNAME): {exc}") from None
    except UnsupportedSaslMechanismError as exc:
        raise SettingsError(f"bad setting STREAMREC_BROKER__SASL_MECHANISM: the broker at {host}:{port} does not offer "
                            f"{broker.sasl_mechanism} ({exc})") from None
    except ssl.SSLCertVerificationError as exc:
        raise SettingsError(f"bad setting STREAMREC_BROKER__SSL_CAFILE: the broker's certificate at {host}:{port} "
                            f"is not trusted ({exc.verify_message})") from None
    except (KafkaError, OSError, asyncio.TimeoutError) as exc:
        raise SettingsError(f"bad setting STREAMREC_BROKER__SECURITY_PROTOCOL: no {broker.security_protocol} session "
                            f"with the broker at {host}:{port} ({type(exc).__name__}: {exc})") from None
    finally:
        # Wait for the socket to close (a refused login closes it too): the caller's loop may
        # end right after, and a TLS transport closes over a few more round trips; left to the
        # garbage collector it is an unclosed socket (a ResourceWarning at some later point).
        closed = conn.close()
        if closed is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), 2.0)


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
