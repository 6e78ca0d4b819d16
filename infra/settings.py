"""The settings every layer needs to reach the broker, and the error a bad setting raises.

They live in the bottom layer because the Kafka clients (infra/kafka_clients.py) are
built from them and every layer above may build one. The ``Settings`` root that
composes every section, and reads the ``STREAMREC_`` environment, is
stream/settings.py: it sits in the stream layer because it holds every layer's section
(features' ``FeatureConfig``, models' ``ModelConfig``, the pipeline's own); the layers
below it never load it, their callers hand each one its section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator


class SettingsError(ValueError):
    """A setting has a bad value; the message names it as an environment variable."""


class BrokerSettings(BaseModel):
    model_config = {"extra": "forbid"}

    bootstrap_servers: str = "127.0.0.1:19092"
    fetch_max_wait_ms: int = Field(
        default=50, ge=1, le=60_000,
        description="longest a fetch waits for data; Kafka answers as soon as data arrives, but a partition left out "
        "of the fetch in flight (its records still buffered) waits up to this long (stream/transport.py)",
    )
    # A dead worker's partitions move after session_timeout_s; a rebalance waits for live
    # members at most rebalance_timeout_s (Kafka ends it as soon as every member has rejoined).
    session_timeout_s: float = Field(default=10.0, gt=0)
    rebalance_timeout_s: float = Field(default=20.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    partitions: int = Field(default=4, ge=1, le=1024)
    producer_linger_ms: float = Field(
        default=2.0, ge=0, le=1000,
        description="batch sends this long (fewer requests per message); a worker's batch sends what it made when "
        "it is done, without waiting the linger out (stream/transport.py)",
    )
    replication_factor: int = Field(default=1, ge=1)
    max_poll_records: int = Field(
        default=500, ge=1, le=1_000_000,
        description="most records Faust takes from the consumer at once; it delivers all of them before taking "
        "more, so with no bound a backlog on one topic starves the others (the item side stalled for seconds)",
    )
    commit_interval_s: float = Field(default=1.0, gt=0, le=600, description="how often consumed offsets are committed (and write-behind state flushed)")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the broker's certificate (SSL, SASL_SSL)")

    @model_validator(mode="after")
    def _consistent(self) -> BrokerSettings:
        if self.heartbeat_interval_s * 3 > self.session_timeout_s:
            raise ValueError("heartbeat_interval_s must be at most a third of session_timeout_s")
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs STREAMREC_BROKER__SASL_USERNAME "
                             "and STREAMREC_BROKER__SASL_PASSWORD")
        if not all(":" in part for part in self.bootstrap_servers.split(",")):
            raise ValueError("bootstrap_servers must be host:port[,host:port...]")
        return self

    @property
    def url(self) -> str:
        return ";".join(f"kafka://{hp.strip()}" for hp in self.bootstrap_servers.split(","))
