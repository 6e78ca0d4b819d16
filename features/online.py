"""The hot-path online feature client: Feast's Redis layout, one round trip per batch.

:class:`OnlineFeatureStore` is the narrow interface the workers use;
:class:`RedisFeatureStore` implements it on ``redis.asyncio`` and never imports
feast. Whatever it writes, Feast's ``get_online_features`` reads back identically,
and its reads equal Feast's (``tests/features/test_feast_contract.py``).

Write semantics (differs from Feast's writer on purpose): every row is written
unconditionally, last write wins, in ONE pipelined round trip per batch. Feast's
own writer first reads each ``_ts:<view>`` (a second round trip) and drops a row
that is not strictly newer. Here each row is an entity's whole state, produced by
the single agent that owns the entity's partition, so a later row is always at
least as complete, even when a late event leaves its event timestamp unchanged
(which Feast's writer would wrongly drop).
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamrec.features import codec, resp
from streamrec.features.config import FeatureConfig
from streamrec.features.indexes import IndexKeys, index_commands
from streamrec.features.schema import VIEWS, DType, FeatureRow, FeatureValue, ViewSpec

FeatureDict = dict[str, FeatureValue | None]
Decoder = Callable[[bytes | None], FeatureValue | None]
_KEY_CACHE_MAX = 200_000  # entity keys kept packed per view (~100 B each)


@dataclass(frozen=True)
class ReadRequest:
    """Features of one view for a batch of entities; ``features=None`` means all."""

    view: str
    entity_ids: Sequence[str]
    features: Sequence[str] | None = None


def reconnecting(reconnect_s: float) -> Retry:
    """Retry a command that met a connection error or timeout (Redis restarting) for about
    ``reconnect_s`` seconds: waits of 0.1 s doubling to 1 s. 0: no retry."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=int(reconnect_s) + 3 if reconnect_s > 0 else 0,
                 supported_errors=(RedisConnectionError, RedisTimeoutError))


def redis_client(redis_url: str, *, reconnect_s: float = 0.0) -> aioredis.Redis:
    """A ``redis.asyncio`` client (bytes replies) whose commands, and the round trips of
    features/resp.py on it, wait out a Redis restart of up to ``reconnect_s`` seconds
    (:func:`reconnecting`); 0: a plain client."""
    if reconnect_s <= 0:
        return aioredis.Redis.from_url(redis_url, decode_responses=False)
    return aioredis.Redis.from_url(redis_url, decode_responses=False, retry=reconnecting(reconnect_s),
                                   # ECONNRESET can surface raw from a socket Redis closed as it restarted
                                   retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError])


class OnlineFeatureStore(abc.ABC):
    """Read and write feature rows in batches. Coroutines; not thread-safe."""

    @abc.abstractmethod
    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        """Write whole rows; returns once they are readable. Last write wins."""

    @abc.abstractmethod
    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[FeatureDict]]:
        """Read several views at once; per request one dict per entity id, in order.

        A feature never written reads as ``None``; so does every feature of an
        entity that was never written.
        """

    async def read_batch(
        self, view: str, entity_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> list[FeatureDict]:
        return (await self.read_many([ReadRequest(view, entity_ids, features)]))[0]

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""


class RedisFeatureStore(OnlineFeatureStore):
    """Feast's Redis online-store layout over ``redis.asyncio``, plus the indexes."""

    def __init__(self, client: aioredis.Redis, cfg: FeatureConfig) -> None:
        self._client = client
        self._cfg = cfg
        self._project = cfg.project
        self.keys = IndexKeys(cfg.project)
        # prepacked RESP pieces: the field names of every feature never change
        self._field_bulks = {
            view.name: {name: resp.bulk(codec.field_key(view.name, name)) for name in view.feature_names}
            for view in VIEWS.values()
        }
        self._ts_bulks = {view: resp.bulk(codec.timestamp_field(view)) for view in VIEWS}
        self._hmget_fields: dict[tuple[str, tuple[str, ...]], tuple[bytes, tuple[Decoder, ...]]] = {}
        # RESP bulk of each entity's hash key, per view: building one costs more than the lookup
        self._key_bulks: dict[str, dict[str, bytes]] = {view: {} for view in VIEWS}
        self._packers = {
            view.name: {name: (self._field_bulks[view.name][name], _VALUE_PACKERS[dtype]) for name, dtype in view.features}
            for view in VIEWS.values()
        }

    @classmethod
    def from_url(cls, redis_url: str, cfg: FeatureConfig, *, reconnect_s: float = 0.0) -> RedisFeatureStore:
        """Connect lazily (no I/O here); ``redis_url`` like ``redis://127.0.0.1:6379/0``.
        With ``reconnect_s`` every read and write waits out a Redis restart that long (the
        writes are whole rows and set/sorted-set adds: repeating one changes nothing)."""
        return cls(redis_client(redis_url, reconnect_s=reconnect_s), cfg)

    def _key_bulk(self, spec: ViewSpec, entity_id: str) -> bytes:
        cache = self._key_bulks[spec.name]
        packed = cache.get(entity_id)
        if packed is None:
            if len(cache) >= _KEY_CACHE_MAX:
                cache.clear()
            packed = cache[entity_id] = resp.bulk(codec.entity_key(spec.join_key, entity_id, self._project))
        return packed

    def _hset(self, row: FeatureRow) -> bytes:
        packers = self._packers[row.view]
        parts = []
        for name, value in row.values.items():
            field, pack = packers[name]
            parts.append(field)
            parts.append(pack(value))
        parts.append(self._ts_bulks[row.view])
        parts.append(resp.bulk(codec.encode_timestamp(row.event_ts_ms)))
        head = resp.header(2 + len(parts), b"HSET") + self._key_bulk(VIEWS[row.view], row.entity_id)
        return head + b"".join(parts)

    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        commands: list[bytes] = []
        for row in rows:
            commands.append(self._hset(row))
            commands.extend(index_commands(row, self.keys, self._cfg))
        await resp.round_trip(self._client, commands)

    def _hmget_plan(self, spec: ViewSpec, names: tuple[str, ...]) -> tuple[bytes, tuple[Decoder, ...]]:
        """The packed field list of an HMGET of ``names`` and a decoder per field."""
        plan = self._hmget_fields.get((spec.name, names))
        if plan is None:
            tail = b"".join(self._field_bulks[spec.name][name] for name in names)
            plan = self._hmget_fields[(spec.name, names)] = (tail, tuple(codec.decoder(spec.dtype(n)) for n in names))
        return plan

    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[FeatureDict]]:
        commands: list[bytes] = []
        plans = []
        for request in requests:
            spec = VIEWS[request.view]
            wanted = tuple(request.features or spec.feature_names)
            head = resp.header(2 + len(wanted), b"HMGET")
            tail, decoders = self._hmget_plan(spec, wanted)
            key_bulk = self._key_bulk
            commands.extend(head + key_bulk(spec, e) + tail for e in request.entity_ids)
            plans.append((wanted, decoders, len(request.entity_ids)))
        replies = await resp.round_trip(self._client, commands)
        out: list[list[FeatureDict]] = []
        pos = 0
        for names, decoders, count in plans:
            out.append([{n: d(r) for n, d, r in zip(names, decoders, reply)} for reply in replies[pos : pos + count]])
            pos += count
        return out

    async def read_row_timestamps(self, view: str, entity_ids: Sequence[str]) -> list[int | None]:
        """Each entity's ``_ts:<view>`` in UTC ms (``None`` if never written)."""
        spec = VIEWS[view]
        ts_field = resp.bulk(codec.timestamp_field(view))
        head = resp.header(3, b"HGET")
        replies = await resp.round_trip(self._client, [head + self._key_bulk(spec, e) + ts_field for e in entity_ids])
        return [codec.decode_timestamp_ms(r) for r in replies]

    async def top_items_by_mean(self, k: int) -> list[tuple[str, float]]:
        """Best mean rating first, among items with at least ``top_min_count`` ratings."""
        pairs = await self._client.zrevrange(self.keys.item_mean, 0, k - 1, withscores=True)
        return [(item.decode(), float(score)) for item, score in pairs]

    async def top_items_by_popularity(self, k: int) -> list[str]:
        """Highest time-decayed popularity first."""
        items = await self._client.zrevrange(self.keys.item_popularity, 0, k - 1)
        return [item.decode() for item in items]

    async def seen_items(self, user_id: str) -> set[str]:
        """The newest ``seen_max_items`` items the user interacted with (any event type)."""
        members = await self._client.zrange(self.keys.seen(user_id), 0, -1)
        return {item.decode() for item in members}

    async def close(self) -> None:
        await self._client.aclose()


_F64_BULK = struct.Struct("<d")
_SMALL_INT_BULKS = tuple(resp.bulk(codec.encode_value("int64", n)) for n in range(4096))


def _pack_float64(value: Any) -> bytes:
    # the RESP bulk of a serialized Value{double_val}: always 9 bytes
    return b"$9\r\n\x29" + _F64_BULK.pack(value) + b"\r\n"


def _pack_int64(value: Any) -> bytes:
    if 0 <= value < 4096:  # counters: prepacked
        return _SMALL_INT_BULKS[value]
    return resp.bulk(codec.encode_value("int64", value))


def _packer(dtype: DType) -> Callable[[Any], bytes]:
    def pack(value: Any) -> bytes:
        return resp.bulk(codec.encode_value(dtype, value))

    return pack


# value -> the RESP bulk string of its serialized feast Value, per feature type
_VALUE_PACKERS: dict[DType, Callable[[Any], bytes]] = {
    "float64": _pack_float64,
    "int64": _pack_int64,
    "string": _packer("string"),
    "string_list": _packer("string_list"),
    "float64_list": _packer("float64_list"),
}
