"""The Feast feature repo: entities, feature views and push sources from ``schema.py``.

``feature_store.yaml`` depends on settings (Redis URL, data dir), so it is
generated at run time into ``<data_dir>/feature_repo``; the objects are applied
programmatically. Feast is imported inside functions only: the worker's hot path
(``streamrec.features.online``) never pays ``import feast`` (5-8 s, ~360 MB).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from streamrec.features.config import FeatureConfig
from streamrec.features.schema import TIMESTAMP_COLUMN, VIEWS, DType, ViewSpec

if TYPE_CHECKING:
    from feast import FeatureStore

REPO_DIRNAME = "feature_repo"
YAML_NAME = "feature_store.yaml"


def redis_connection_string(redis_url: str) -> str:
    """Feast's ``host:port,db=N[,username=..][,password=..][,ssl=true,ssl_ca_certs=..]`` form of a
    ``redis://`` or ``rediss://`` URL (``?ssl_ca_certs=`` names the CA to trust)."""
    url = urlparse(redis_url)
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise ValueError(f"redis_url must look like redis://host:port/db, got {redis_url!r}")
    db = url.path.lstrip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"redis_url database must be a number, got {db!r}")
    parts = [f"{url.hostname}:{url.port or 6379}", f"db={db}"]
    if url.username:
        parts.append(f"username={unquote(url.username)}")
    if url.password:
        parts.append(f"password={unquote(url.password)}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
        parts += [f"ssl_ca_certs={ca}" for ca in parse_qs(url.query).get("ssl_ca_certs", [])[:1]]
    return ",".join(parts)


def offline_path(data_dir: Path, view: str) -> Path:
    """Where the file offline source of ``view`` lives (written by the export)."""
    return data_dir / "offline" / f"{view}.parquet"


def write_feature_store_yaml(cfg: FeatureConfig, redis_url: str, data_dir: Path) -> Path:
    repo = Path(data_dir) / REPO_DIRNAME
    repo.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        (
            f"project: {cfg.project}",
            "provider: local",
            "registry:",
            "  registry_type: file",
            f"  path: {(repo / 'registry.db').resolve()}",
            f"  cache_ttl_seconds: {cfg.registry_cache_ttl_s}",
            "online_store:",
            "  type: redis",
            f"  connection_string: \"{redis_connection_string(redis_url)}\"",
            "offline_store:",
            "  type: file",
            "entity_key_serialization_version: 3",
            "",
        )
    )
    path = repo / YAML_NAME
    path.touch(mode=0o600)
    path.chmod(0o600)  # it holds the Redis login, when there is one
    path.write_text(text)
    return repo


def repo_objects(data_dir: Path) -> list[Any]:
    """Feast entities, batch sources, push sources and feature views."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType

    entities: dict[str, Entity] = {}
    objects: list[Any] = []
    for spec in VIEWS.values():
        entity = entities.setdefault(
            spec.entity, Entity(name=spec.entity, join_keys=[spec.join_key], value_type=ValueType.STRING)
        )
        batch = FileSource(
            name=f"{spec.name}_file",
            path=str(offline_path(Path(data_dir).resolve(), spec.name)),
            timestamp_field=TIMESTAMP_COLUMN,
        )
        push = PushSource(name=spec.push_source, batch_source=batch)
        view = FeatureView(
            name=spec.name,
            entities=[entity],
            ttl=timedelta(0),
            schema=[Field(name=name, dtype=_feast_type(dtype)) for name, dtype in spec.features],
            source=push,
            online=True,
            description=_describe(spec),
        )
        objects += [batch, push, view]
    return list(entities.values()) + objects


def _feast_type(dtype: DType) -> Any:
    from feast.types import Array, Float64, Int64, String

    return {
        "float64": Float64,
        "int64": Int64,
        "string": String,
        "string_list": Array(String),
        "float64_list": Array(Float64),
    }[dtype]


def _describe(spec: ViewSpec) -> str:
    return f"streamrec {spec.entity} features, written by the streaming agents (features/online.py)"


def apply_repo(cfg: FeatureConfig, redis_url: str, data_dir: Path) -> Path:
    """Write ``feature_store.yaml`` and apply the repo; idempotent. Returns the repo path.

    Blocking and slow the first time in a process (``import feast``): call it at
    worker start, before consuming, or in a thread.
    """
    repo = write_feature_store_yaml(cfg, redis_url, Path(data_dir))
    store = feature_store(repo)
    store.apply(repo_objects(Path(data_dir)))
    return repo


def feature_store(repo_path: Path) -> FeatureStore:
    """Feast's own ``FeatureStore`` on an applied repo, for tests, tools and benchmarks."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


def feature_refs(view: str, features: list[str] | None = None) -> list[str]:
    """``view:feature`` references for ``get_online_features``."""
    names = features or list(VIEWS[view].feature_names)
    return [f"{view}:{name}" for name in names]
