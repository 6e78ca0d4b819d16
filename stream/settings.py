"""Settings for every streamrec process: one ``Settings`` object, built by ``load_settings``.

Environment variables use the prefix ``STREAMREC_`` and ``__`` between nested names,
e.g. ``STREAMREC_BROKER__FETCH_MAX_WAIT_MS=5``. Every default works on the embedded
stack (Apache Kafka and redis-server on loopback). A bad value raises ``SettingsError`` naming the environment variable.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import quote, urlencode
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import EVENT_TYPES
from streamrec.infra.settings import BrokerSettings, SettingsError
from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig

ENV_PREFIX = "STREAMREC_"


class TopicSettings(BaseModel):
    model_config = {"extra": "forbid"}

    clickstream: str = "clickstream"
    dlq: str = "clickstream.dlq"
    by_item: str = "streamrec.events-by-item"
    recommendations: str = "recommendations"
    metrics: str = "metrics"
    to_recommend: str = "streamrec.to-recommend"


class RedisSettings(BaseModel):
    model_config = {"extra": "forbid"}

    url: str = "redis://127.0.0.1:16379/0"
    reconnect_s: float = Field(default=30.0, ge=0, le=3600,
                               description="how long the worker's Redis commands wait out a Redis restart before it stops")
    username: str | None = Field(default=None, description="an ACL user; without it the password is the default user's")
    password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the server's certificate (rediss:// URLs)")

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return value

    @property
    def effective_url(self) -> str:
        """``url`` with ``username``/``password`` put in (when set apart from the URL) and,
        for ``rediss://``, ``ssl_cafile`` as ``ssl_ca_certs``: every Redis client of streamrec
        and Feast's connection string (features/repo.py) are built from it."""
        url = self.url
        if self.password is not None and "@" not in url:
            scheme, rest = url.split("://", 1)
            user = quote(self.username, safe="") if self.username else ""
            url = f"{scheme}://{user}:{quote(self.password.get_secret_value(), safe='')}@{rest}"
        if self.ssl_cafile is not None and url.startswith("rediss://"):
            url += ("&" if "?" in url else "?") + urlencode({"ssl_ca_certs": str(self.ssl_cafile.resolve())})
        return url


class StackSettings(BaseModel):
    """Ports and data directory of the embedded stack (`streamrec stack up`)."""

    model_config = {"extra": "forbid"}

    data_dir: Path = Path("var/stack")
    broker_port: int = Field(default=19092, ge=1, le=65535)
    controller_port: int = Field(default=19093, ge=1, le=65535, description="the KRaft controller's listener")
    redis_port: int = Field(default=16379, ge=1, le=65535)
    broker_heap_mb: int = Field(default=256, ge=192, le=65536, description="the broker JVM's heap (-Xms/-Xmx)")
    sasl: bool = Field(default=False, description="the broker asks for a SCRAM-SHA-512 login: STREAMREC_BROKER__SASL_USERNAME "
                       "/ __SASL_PASSWORD, created when its storage is formatted")
    redis_auth: bool = Field(default=False, description="redis-server asks for a login: STREAMREC_REDIS__USERNAME (optional) / __PASSWORD")
    tls: bool = Field(default=False, description="broker and redis-server speak TLS only, with certificates made under data_dir/tls")

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackSettings:
        if len({self.broker_port, self.controller_port, self.redis_port}) < 3:
            raise ValueError("broker_port, controller_port and redis_port must differ")
        return self


class RecommendSettings(BaseModel):
    model_config = {"extra": "forbid"}

    top_k: int = Field(default=10, ge=1, le=1000)
    recommender: Literal["ranking", "top_mean"] = "ranking"
    candidates: CandidateConfig = CandidateConfig()
    trigger_types: list[str] = ["view", "click", "add_to_cart", "purchase", "rating"]
    debounce_ms: float = Field(default=0.0, ge=0, le=60_000)
    cache_ttl_s: int = Field(default=3600, ge=0, description="per-user cache of the last list; 0 turns it off")
    near_cache_ms: float = Field(
        default=250.0, ge=0, le=60_000,
        description="how long ranking reuses the item columns, co-visitors and popular items it read from Redis "
        "(stream/near_cache.py): lists may use item aggregates that much older; the users' own columns and seen "
        "items are always current. 0 reads them for every batch",
    )

    @field_validator("trigger_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}")
        return value


class WorkerSettings(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    role: Literal["all", "features", "recommend"] = "all"
    app_id: str = "streamrec"
    data_dir: Path = Path("var/worker")
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_enabled: bool = False
    prometheus_port: int = Field(default=0, ge=0, le=65535, description="/metrics in Prometheus text; 0 = off (e.g. 9464)")
    prometheus_host: str = "127.0.0.1"
    metrics_interval_s: float = Field(default=5.0, gt=0)
    max_event_bytes: int = Field(default=4096, ge=64, le=1_048_576)
    allow_unknown_fields: bool = False
    stream_buffer_maxsize: int = Field(default=4096, ge=1)
    batch_max: int = Field(default=500, ge=1, le=100_000)
    batch_within_ms: float = Field(
        default=5.0, gt=0, le=10_000,
        description="how long a batch collects events (fewer when batch_max fill it first); an event waits up to this "
        "long for its batch to close. On a quiet 2-core machine 5 ms kept both e2e targets (500 ev/s MovieLens p50 "
        "~15 / p99 ~31-47 ms; 250 ev/s of clicks p99 ~47 ms) where 20 ms doubled p50 and p99. On a machine with "
        "little CPU to spare (a busy host), 5 ms batches held ~14 events, the worker fell behind at 500 ev/s and 20 ms "
        "kept up (p50 ~80 ms): raise it when the worker cannot keep up",
    )
    gc_freeze: bool = Field(
        default=True,
        description="after start-up, move every object alive then (Faust, onnxruntime, Feast, the model: ~350k) out "
        "of the garbage collector's scans (gc.freeze): a full collection over them stalls the event loop for "
        "100 ms or more, periodically, in every stage's tail",
    )
    gc_full_threshold: int = Field(
        default=100, ge=1, le=1_000_000,
        description="Python's third garbage-collector threshold in the worker (gc.set_threshold, at start-up): a "
        "full collection runs after this many collections of the middle generation (Python's default: 10). "
        "Past the start-up heap (gc_freeze) the old generation holds the decoded feature states, and a full "
        "collection over them stalled the event loop for 35-50 ms (up to 130) every ~3.5 s at 250 lists/s. At 100 "
        "one runs about every 30 s (7-8 against 53-74 in a 4-minute clicks run); each reclaimed 0-10 objects",
    )
    blas_threads: int = Field(
        default=1, ge=0, le=1024,
        description="threads numpy's BLAS may use in the worker (threadpoolctl, at start-up); 0 leaves BLAS its own "
        "choice: on a small machine the embedding search ran 5x slower with BLAS threads fighting the event loop, "
        "onnxruntime and the broker for the cores",
    )
    consumer_thread: bool = Field(
        default=False,
        description="run Faust's Kafka consumer in its own thread with its own event loop (Faust's way: its heartbeats "
        "go on while an agent holds the loop for longer than the session timeout); false (the default) runs it on "
        "the worker's event loop: no hand-off between threads for each fetch and no GIL shared with the loop, "
        "6-12% less worker CPU per event (stream/transport.py)",
    )
    gil_switch_interval_ms: float = Field(
        default=0.5, gt=0, le=100,
        description="sys.setswitchinterval of the worker: with consumer_thread, Faust's consumer runs in a second "
        "thread, and with Python's default 5 ms the event loop waits that long for the GIL after each socket write",
    )
    cpu_affinity: str = Field(
        default="", pattern=r"^$|^\d+(-\d+)?(,\d+(-\d+)?)*$",
        description='the cores the worker runs on, as taskset writes them ("1", "2-3", "0,2"); empty: any core. '
        "On a machine shared with the broker, Redis and other programs, a core of its own keeps the worker from "
        "waiting behind them for one (os.sched_setaffinity at start-up; its threads inherit it)",
    )
    state_flush_keys: int = Field(
        default=64, ge=1, le=1_000_000,
        description="write changed states to their changelogs once this many are pending (and before every commit): "
        "bounds the pause a flush causes",
    )
    state_cache_keys: int = Field(
        default=1_000, ge=1, le=10_000_000,
        description="decoded states kept per table, the most recently used (stream/state_table.py); the rest stay "
        "encoded (JSON bytes, ~10x smaller) and are decoded again when their key comes back",
    )
    online_check_s: float = Field(
        default=2.0, gt=0, le=3600,
        description="how often the worker checks that Redis still holds its rows (its marker key), and rewrites them "
        "from its tables when Redis lost them (stream/online_refill.py)",
    )


class GatewaySettings(BaseModel):
    """The browser gateway (``streamrec gateway``): HTTP address, CORS, and how it fans out."""

    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="0 binds a free port")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='origins besides the gateway itself allowed to call it from a browser, e.g. ["http://localhost:3000"]; "*" for any',
    )
    group_id: str = Field(
        default_factory=lambda: f"streamrec-gateway-{socket.gethostname()}-{os.getpid()}",
        description="the gateway's consumer group; each gateway needs its own (every browser may want any user's lists)",
    )
    client_buffer: int = Field(default=256, ge=1, le=100_000,
                               description="messages queued for one browser; one that falls this far behind is dropped")
    max_clients: int = Field(default=10_000, ge=1, description="open live streams; more get 503")
    heartbeat_s: float = Field(default=15.0, gt=0, le=3600, description="a comment line on idle streams, so proxies keep them open")
    history: int = Field(default=720, ge=0, le=100_000, description="metrics snapshots a new monitoring page starts with")
    stats_interval_s: float = Field(default=2.0, gt=0, le=3600, description="how often the gateway sends its own figures to monitoring pages")
    producer_linger_ms: float = Field(default=0.0, ge=0, le=1000,
                                      description="browser events are few and waited for: sent at once by default")
    catalogue: str = Field(default="movielens", description="data set whose items the shopper page shows (movielens, instacart, synthetic)")
    data_dir: Path = Path("var/gateway")
    vendor_dir: Path | None = Field(
        default=None, description="the npm packages the pages use (uPlot, Swagger UI); default: those infra/install.sh installs",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must be \"*\" or start with http:// or https://")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    broker: BrokerSettings = BrokerSettings()
    topics: TopicSettings = TopicSettings()
    redis: RedisSettings = RedisSettings()
    stack: StackSettings = StackSettings()
    worker: WorkerSettings = WorkerSettings()
    recommend: RecommendSettings = RecommendSettings()
    features: FeatureConfig = FeatureConfig()
    models: ModelConfig = ModelConfig()

    @model_validator(mode="after")
    def _stack_credentials(self) -> Settings:
        if self.stack.sasl and not (self.broker.sasl_username and self.broker.sasl_password):
            raise ValueError("STREAMREC_STACK__SASL needs STREAMREC_BROKER__SASL_USERNAME and STREAMREC_BROKER__SASL_PASSWORD "
                             "(the SCRAM user the stack creates)")
        if self.stack.redis_auth and self.redis.password is None:
            raise ValueError("STREAMREC_STACK__REDIS_AUTH needs STREAMREC_REDIS__PASSWORD (and optionally STREAMREC_REDIS__USERNAME)")
        return self

    @model_validator(mode="after")
    def _exactly_once_without_debounce(self) -> Settings:
        # A debounced list is sent by a timer, outside the transaction of the event that caused it.
        if self.broker.processing_guarantee == "exactly_once" and self.recommend.debounce_ms > 0:
            raise ValueError("STREAMREC_RECOMMEND__DEBOUNCE_MS must be 0 with STREAMREC_BROKER__PROCESSING_GUARANTEE="
                             "exactly_once (a debounced list is sent outside its event's transaction)")
        return self
    gateway: GatewaySettings = GatewaySettings()


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment plus explicit overrides (nested dicts allowed).

    Raises ``SettingsError`` naming the offending ``STREAMREC_...`` variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        path = [str(p) for p in err["loc"]]
        name = ENV_PREFIX + "__".join(p.upper() for p in path) if path else ENV_PREFIX + "*"
        lines.append(f"bad setting {name}: {err['msg']}")
    return "; ".join(lines)
