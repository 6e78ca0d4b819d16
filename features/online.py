"""The online store: one narrow interface for everything the pipeline asks of it.

:class:`OnlineFeatureStore` is what the workers use: feature rows (write, read), the
candidate-generation inputs, the item indexes (top by mean, popularity), a user's seen
items, the list cache and the worker's marker. Callers never see a Redis key.
:class:`RedisFeatureStore` implements it on ``redis.asyncio`` (one client, so one
connection pool, per process) and never imports feast. Whatever it writes, Feast's
``get_online_features`` reads back identically, and its reads equal Feast's
(``tests/features/test_feast_contract.py``).

Write semantics (differs from Feast's writer on purpose): every row is written
unconditionally, last write wins, in ONE pipelined round trip per batch. Feast's
own writer first reads each ``_ts:<view>`` (a second round trip) and drops a row
that is not strictly newer. Here each row is an entity's whole state, produced by
the single agent that owns the entity's partition, so a later row is always at
least as complete, even when a late event leaves its event timestamp unchanged
(which Feast's writer would wrongly drop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from streamrec.features import codec, resp
from streamrec.features.config import FeatureConfig
from streamrec.features.indexes import IndexKeys, index_commands
from streamrec.features.list_cache import WRITE_IF_NEWER, ListCacheKeys, ListWrite
from streamrec.features.messages import ItemId, UserId
from streamrec.features.packing import VALUE_PACKERS
from streamrec.features.redis_conn import redis_client
from streamrec.features.schema import ITEM_VIEW, VIEWS, FeatureRow, FeatureValue, ViewSpec

FeatureDict = dict[str, FeatureValue | None]
Decoder = Callable[[bytes | None], FeatureValue | None]
# Entity keys kept packed per view (~200 B an entry with its dict slot), cleared when full:
# enough for a shop's hot items, re-read on every ranking; a user's key is packed about
# once per event anyway. At 200,000 a view it grew with every new user a worker saw.
_KEY_CACHE_MAX = 10_000
COVISIT_FIELDS = ("covisit_items", "covisit_weights")


@dataclass(frozen=True)
class ReadRequest:
    """Features of one view for a batch of entities; ``features=None`` means all."""

    view: str
    entity_ids: Sequence[str]
    features: Sequence[str] | None = None


@dataclass
class CandidateInputs:
    """What candidate generation reads: each item's co-visitors (ids, weights), the most
    popular items (best first) and each user's seen items."""

    neighbours: dict[ItemId, tuple[list[ItemId], list[float]]]
    popular: list[ItemId]
    seen: dict[UserId, set[ItemId]]


class OnlineFeatureStore(Protocol):
    """Everything the pipeline asks of the online store. Coroutines, not thread-safe; each
    method is one round trip and raises on a store error (after the reconnect window)."""

    async def write_batch(self, rows: Sequence[FeatureRow]) -> None:
        """Write whole rows (and the indexes they feed); returns once they are readable. Last write wins."""
        ...

    async def read_many(self, requests: Sequence[ReadRequest]) -> list[list[FeatureDict]]:
        """Read several views at once; per request one dict per entity id, in order. A
        feature never written reads as ``None``; so does every feature of an unknown entity."""
        ...

    async def candidate_inputs(self, items: Sequence[ItemId], users: Sequence[UserId], popular_depth: int) -> CandidateInputs:
        """The co-visitors of ``items``, the ``popular_depth`` most popular items (none for 0)
        and the users' seen items."""
        ...

    async def top_items_by_mean(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` items with the highest mean rating (among those with enough ratings), best first."""
        ...

    async def top_items_by_popularity(self, k: int) -> list[str]:
        """The ``k`` items with the highest time-decayed popularity, best first."""
        ...

    async def seen_items(self, user_id: str) -> set[str]:
        """The newest ``seen_max_items`` items the user interacted with (any event type)."""
        ...

    async def write_lists(self, writes: Sequence[ListWrite], ttl_s: int) -> None:
        """Cache (or drop: payload ``None``) each user's list, in order, expiring after ``ttl_s``;
        a write older than the user's newest version in the cache changes nothing."""
        ...

    async def cached_list(self, user_id: str) -> bytes | None:
        """The user's cached list as written, ``None`` when there is none."""
        ...

    async def marker_present(self, worker_id: str) -> bool:
        """Whether the store still holds ``worker_id``'s marker (it loses it with its data)."""
        ...

    async def set_marker(self, worker_id: str) -> None: ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class RedisFeatureStore(OnlineFeatureStore):
    """Feast's Redis online-store layout over ``redis.asyncio``, plus the indexes, the list
    cache and the workers' markers, all under the project's keys."""

    def __init__(self, client: aioredis.Redis, cfg: FeatureConfig) -> None:
        self._client = client
        self._cfg = cfg
        self._project = cfg.project
        self.keys = IndexKeys(cfg.project)
        self._lists = ListCacheKeys(cfg.project)
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
            view.name: {name: (self._field_bulks[view.name][name], VALUE_PACKERS[dtype]) for name, dtype in view.features}
            for view in VIEWS.values()
        }
        self._covisit_tail = b"".join(self._field_bulks[ITEM_VIEW][name] for name in COVISIT_FIELDS)

    @classmethod
    def from_url(cls, redis_url: str, cfg: FeatureConfig, *, reconnect_s: float = 0.0) -> Self:
        """Connect lazily (no I/O here); ``redis_url`` like ``redis://127.0.0.1:6379/0``.
        With ``reconnect_s`` every read and write waits out a Redis restart that long (the
        writes are whole rows, set/sorted-set adds and versioned list writes: repeating one
        changes nothing)."""
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

    async def read_batch(self, view: str, entity_ids: Sequence[str], features: Sequence[str] | None = None) -> list[FeatureDict]:
        """One view's rows: :meth:`read_many` of one request."""
        return (await self.read_many([ReadRequest(view, entity_ids, features)]))[0]

    async def candidate_inputs(self, items: Sequence[ItemId], users: Sequence[UserId], popular_depth: int) -> CandidateInputs:
        head = resp.header(2 + len(COVISIT_FIELDS), b"HMGET")
        item_spec = VIEWS[ITEM_VIEW]
        commands = [head + self._key_bulk(item_spec, item) + self._covisit_tail for item in items]
        if popular_depth > 0:
            commands.append(resp.command(b"ZREVRANGE", self.keys.item_popularity.encode(), b"0", b"%d" % (popular_depth - 1)))
        commands.extend(resp.command(b"ZRANGE", self.keys.seen(user).encode(), b"0", b"-1") for user in users)
        replies = await resp.round_trip(self._client, commands)
        if popular_depth <= 0:
            replies.insert(len(items), [])
        return decode_candidate_inputs(items, users, replies)

    async def read_row_timestamps(self, view: str, entity_ids: Sequence[str]) -> list[int | None]:
        """Each entity's ``_ts:<view>`` in UTC ms (``None`` if never written)."""
        spec = VIEWS[view]
        head = resp.header(3, b"HGET")
        ts_field = self._ts_bulks[view]
        replies = await resp.round_trip(self._client, [head + self._key_bulk(spec, e) + ts_field for e in entity_ids])
        return [codec.decode_timestamp_ms(r) for r in replies]

    async def top_items_by_mean(self, k: int) -> list[tuple[str, float]]:
        """Best mean rating first, among items with at least ``top_min_count`` ratings."""
        pairs = await self._client.zrevrange(self.keys.item_mean, 0, k - 1, withscores=True)
        return [(item.decode(), float(score)) for item, score in pairs]

    async def top_items_by_popularity(self, k: int) -> list[str]:
        items = await self._client.zrevrange(self.keys.item_popularity, 0, k - 1)
        return [item.decode() for item in items]

    async def seen_items(self, user_id: str) -> set[str]:
        members = await self._client.zrange(self.keys.seen(user_id), 0, -1)
        return {item.decode() for item in members}

    async def write_lists(self, writes: Sequence[ListWrite], ttl_s: int) -> None:
        if not writes:
            return
        commands = [resp.command(*self._lists.write_args(write, ttl_s)) for write in writes]
        try:
            await resp.round_trip(self._client, commands)
        except NoScriptError:
            await self._client.script_load(WRITE_IF_NEWER)  # a fresh or restarted Redis; writes are idempotent
            await resp.round_trip(self._client, commands)

    async def cached_list(self, user_id: str) -> bytes | None:
        return cast(bytes | None, await self._client.get(self._lists.entry(user_id)))

    def _marker_key(self, worker_id: str) -> str:
        return f"{self._project}:online:worker:{worker_id}"

    async def marker_present(self, worker_id: str) -> bool:
        return bool(await self._client.exists(self._marker_key(worker_id)))

    async def set_marker(self, worker_id: str) -> None:
        await self._client.set(self._marker_key(worker_id), b"1")

    async def close(self) -> None:
        await self._client.aclose()


def decode_candidate_inputs(items: Sequence[ItemId], users: Sequence[UserId], replies: Sequence[Any]) -> CandidateInputs:
    """:meth:`RedisFeatureStore.candidate_inputs`' replies, in its order (items' HMGETs,
    popular, seen sets), decoded."""
    neighbours: dict[ItemId, tuple[list[ItemId], list[float]]] = {}
    for item, (raw_items, raw_weights) in zip(items, replies[: len(items)]):
        found = codec.decode_value(raw_items) or []
        weights = codec.decode_value(raw_weights) or []
        neighbours[item] = (cast(list[ItemId], found), cast(list[float], weights))
    popular = list(map(bytes.decode, replies[len(items)]))
    seen = {user: set(map(bytes.decode, reply)) for user, reply in zip(users, replies[len(items) + 1 :])}
    return CandidateInputs(neighbours, popular, seen)
