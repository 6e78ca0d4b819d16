"""Starting things: the embedded stack from settings, the Feast repo, the worker.

The worker process never imports feast (``import feast`` pulls torch and ~360 MB):
the Feast repo is applied in a short child process before the worker starts.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.infra.services import RedisAuth
from streamrec.infra.settings import SettingsError
from streamrec.infra.stack import EmbeddedStack, StackConfig, port_open, stop_process  # stop_process: re-exported
from streamrec.stream.settings import RedisSettings, Settings
from streamrec.stream.topics import ensure_topics

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolLimiter



def stack_from(settings: Settings) -> EmbeddedStack:
    """The embedded stack of ``settings.stack``; its SCRAM user and Redis login are the
    ones the clients use (``settings.broker.sasl_*``, ``settings.redis.username/password``)."""
    s, b, r = settings.stack, settings.broker, settings.redis
    sasl_users = ((b.sasl_username or "", b.sasl_password.get_secret_value() if b.sasl_password else ""),) if s.sasl else ()
    redis_auth = None
    if s.redis_auth and r.password is not None:
        redis_auth = RedisAuth(r.password.get_secret_value(), r.username or "default")
    return EmbeddedStack(StackConfig(
        data_dir=s.data_dir,
        broker_port=s.broker_port,
        controller_port=s.controller_port,
        redis_port=s.redis_port,
        broker_heap_mb=s.broker_heap_mb,
        partitions=settings.broker.partitions,
        sasl_users=sasl_users,
        redis_auth=redis_auth,
        tls=s.tls,
    ))


def feature_repo_dir(settings: Settings) -> Path:
    return settings.worker.data_dir / "feature_repo"


def apply_feature_repo(settings: Settings) -> Path:
    """Run ``feast apply`` for streamrec's feature repo against the configured Redis (child process).

    Skipped when the repo was already applied with the same definitions and settings
    (a stamp beside it), which saves the ~10 s that importing feast costs at each start.
    """
    repo = feature_repo_dir(settings)
    stamp = repo / "applied.sha256"
    digest = _repo_digest(settings)
    if stamp.exists() and stamp.read_text() == digest and list(repo.glob("**/registry.db")):
        return repo
    # The child rebuilds the same Settings from this environment (secrets never go on argv).
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run([sys.executable, "-m", "streamrec.stream.apply_repo"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    stamp.write_text(digest)
    return repo


def _repo_digest(settings: Settings) -> str:
    import streamrec.features.repo
    import streamrec.features.schema

    h = hashlib.sha256()
    for module in (streamrec.features.repo, streamrec.features.schema):
        h.update(Path(module.__file__ or "").read_bytes())
    h.update(settings.features.model_dump_json().encode())
    h.update(settings.redis.effective_url.encode())
    return h.hexdigest()


def prepare_model(settings: Settings) -> str:
    """The promoted model version, training and promoting a default first if there is none (child process)."""
    env = {**os.environ, **settings_env(settings)}
    result = subprocess.run([sys.executable, "-m", "streamrec.stream.prepare_model"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"preparing the model failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def spawn_worker(settings: Settings, log: Path, *, loglevel: str = "info") -> subprocess.Popen[bytes]:
    """Start ``streamrec worker`` as a child process with ``settings`` in its environment,
    its output appended to ``log``. Stop it with :func:`stop_process`."""
    env = {**os.environ, **settings_env(settings)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streamrec.stream.cli", "worker", "--loglevel", loglevel],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that rebuild ``settings`` in a child process."""
    env: dict[str, str] = {}
    for section, fields in json.loads(settings.model_dump_json()).items():
        for name, value in fields.items():
            if value is not None:
                env[f"STREAMREC_{section.upper()}__{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    for path, secret in (("REDIS__PASSWORD", settings.redis.password), ("BROKER__SASL_PASSWORD", settings.broker.sasl_password)):
        if secret is not None:
            env[f"STREAMREC_{path}"] = secret.get_secret_value()
    return env


def check_services(settings: Settings, *, redis: bool = True) -> None:
    """Fail fast, naming the service and how to start it, when the broker (or Redis) is down."""
    missing = []
    services = [("broker", settings.broker.bootstrap_servers.split(",")[0], "STREAMREC_BROKER__BOOTSTRAP_SERVERS")]
    if redis:
        services.append(("redis", _redis_host_port(settings.redis.url), "STREAMREC_REDIS__URL"))
    for name, host_port, setting in services:
        host, _, port = host_port.rpartition(":")
        if not port_open(host, int(port), timeout_s=1.0):
            missing.append(f"{name} is not reachable at {host_port} ({setting}); start the embedded stack with "
                           f"`streamrec stack up` or point {setting} at a running {name}")
    if missing:
        raise ServiceUnavailable("; ".join(missing))
    from streamrec.infra.kafka_clients import check_login

    asyncio.run(check_login(settings.broker))
    if redis:
        check_redis_login(settings.redis)


def check_redis_login(settings: RedisSettings) -> None:
    """PING Redis as every client will; a refused login or an untrusted certificate
    raises SettingsError naming the setting to fix. Blocking (redis-py's synchronous
    client: its asyncio one leaves a socket open when the server hangs up mid-login)."""
    import redis
    from redis.exceptions import AuthenticationError, ConnectionError as RedisConnectionError, ResponseError

    if settings.url.startswith("rediss://"):
        _check_redis_certificate(settings)
    client = redis.Redis.from_url(settings.effective_url, socket_connect_timeout=10, socket_timeout=10)
    try:
        client.ping()
    except AuthenticationError as exc:  # also a login asked for but not given (NOAUTH)
        who = f"user {settings.username!r} (STREAMREC_REDIS__USERNAME)" if settings.username else "the default user"
        raise SettingsError(f"bad setting STREAMREC_REDIS__PASSWORD: Redis refused the login of {who}: {exc}") from None
    except ResponseError as exc:
        if "NOAUTH" not in str(exc) and "NOPERM" not in str(exc):
            raise
        raise SettingsError(f"bad setting STREAMREC_REDIS__PASSWORD: Redis asks for a login ({exc})") from None
    except RedisConnectionError as exc:
        raise SettingsError(f"bad setting STREAMREC_REDIS__URL: no session with Redis ({exc}); a TLS-only server "
                            "needs a rediss:// URL") from None
    finally:
        client.close()


def _check_redis_certificate(settings: RedisSettings) -> None:
    """A TLS handshake with the server: its certificate must verify against ``ssl_cafile``."""
    import ssl
    from urllib.parse import urlparse

    from streamrec.infra.tls import handshake

    url = urlparse(settings.url)
    host, port = url.hostname or "localhost", url.port or 6379
    try:
        context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    except OSError as exc:
        raise SettingsError(f"bad setting STREAMREC_REDIS__SSL_CAFILE: cannot read {settings.ssl_cafile} ({exc})") from None
    try:
        handshake(host, port, context)
    except ssl.SSLCertVerificationError as exc:
        raise SettingsError(f"bad setting STREAMREC_REDIS__SSL_CAFILE: Redis's certificate at {host}:{port} is not "
                            f"trusted ({exc.verify_message})") from None
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"bad setting STREAMREC_REDIS__URL: no TLS session with Redis at {host}:{port} ({exc})") from None


class ServiceUnavailable(RuntimeError):
    pass


def limit_blas_threads(threads: int) -> ThreadpoolLimiter | None:
    """Let the BLAS libraries loaded in this process (numpy's, for the embedding search) use at
    most ``threads`` threads, from now on and for every thread of the process; 0: no limit
    (None). Call it after the scoring code is imported: a BLAS loaded later is not limited.
    The returned limiter's ``restore_original_limits()`` undoes it."""
    if threads <= 0:
        return None
    import numpy  # noqa: F401  (loads the BLAS to limit)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def tune_gc(*, freeze: bool, full_threshold: int) -> None:
    """The worker's garbage collector, once it has started: with ``freeze``, every object
    alive now (Faust, onnxruntime, Feast, the model) leaves the collector's scans
    (``gc.freeze``); a full collection then runs after ``full_threshold`` collections of the
    middle generation instead of Python's 10 (``WorkerSettings.gc_freeze`` and
    ``gc_full_threshold``: a full collection over the decoded feature states stalls the
    event loop for tens of milliseconds)."""
    if freeze:
        gc.collect()
        gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, full_threshold)


def parse_cpu_list(spec: str) -> set[int]:
    """The cores of a taskset-style list ("1", "2-3", "0,2-3"); an empty one is empty.
    Raises ``ValueError`` for a range that runs backwards or text that is not a list."""
    cores: set[int] = set()
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"the range {part} runs backwards")
        cores.update(range(low, high + 1))
    return cores


def pin_to_cores(spec: str) -> set[int] | None:
    """Run this process (its threads started from now on too) on the cores of ``spec``
    (``WorkerSettings.cpu_affinity``); empty: leave it where it is (None). Raises
    SettingsError naming the setting when a core does not exist or may not be used."""
    if not spec:
        return None
    setting = "STREAMREC_WORKER__CPU_AFFINITY"
    try:
        cores = parse_cpu_list(spec)
    except ValueError as exc:
        raise SettingsError(f"bad setting {setting}: {spec!r}: {exc}") from None
    missing = sorted(cores - set(range(os.cpu_count() or 1)))
    if missing:
        raise SettingsError(f"bad setting {setting}: this machine has no core {missing[0]} (it has {os.cpu_count()}, "
                            f"numbered from 0)")
    try:
        os.sched_setaffinity(0, cores)
    except OSError as exc:
        raise SettingsError(f"bad setting {setting}: cores {spec} may not be used here ({exc})") from None
    return cores


def run_worker(settings: Settings, *, loglevel: str = "warning") -> int:
    """Blocking: pin to the worker's cores (if set), prepare (Feast apply, model) and run
    the Faust worker until stopped."""
    pin_to_cores(settings.worker.cpu_affinity)  # a bad value raises SettingsError, named by the CLI
    try:
        check_services(settings)
    except ServiceUnavailable as exc:
        print(f"streamrec worker: {exc}", file=sys.stderr)
        return 1
    began = time.monotonic()
    asyncio.run(ensure_topics(settings))
    apply_feature_repo(settings)
    print(f"feature repo applied in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    if settings.worker.role != "features":
        began = time.monotonic()
        version = prepare_model(settings)
        print(f"model {version} ready in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    from streamrec.stream.app import build_app  # after the checks: building the app declares topics

    app = build_app(settings)
    sys.setswitchinterval(settings.worker.gil_switch_interval_ms / 1000.0)
    return app.run_worker(loglevel=loglevel)


def _redis_host_port(url: str) -> str:
    rest = url.split("://", 1)[1].split("/", 1)[0]
    rest = rest.rsplit("@", 1)[-1]
    return rest if ":" in rest else f"{rest}:6379"


