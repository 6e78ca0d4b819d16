"""The per-user cache of the last recommendation list, in Redis beside the features.

After each batch the worker writes each list it emitted and drops the entry of
every other user with a newly accepted event, in one pipelined round trip
(``update``); a user's entry therefore never outlives their next processed event.
Readers that need a user's list without an event (a page load in a frontend,
``streamrec recommendations USER``) call ``get``: a hit
is the list for the user's latest known behaviour; a miss means an event is being
processed (or none was ever seen), so the caller falls back. Hits and misses are
counted for the hit rate.

Every write carries the user's version (the number of events applied to the user's
state, stream/processor.py): a list is stored only if its version is at least the
newest the cache has seen for the user, and dropping an entry records its version.
With split roles the features role drops entries while the recommend role, in
another process, writes lists; without versions a list ranked for an older event
and written after a newer event's drop would be served until the user's next event
(tests/stream/test_split_roles_cache.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from streamrec.features import resp
from streamrec.features.messages import Recommendation
from streamrec.features.online import redis_client

# KEYS: the list, the user's version. ARGV: version, ttl (s), payload (absent: drop the list).
# A list of the newest version seen replaces the entry; a drop removes lists older than its version.
_WRITE_IF_NEWER = b"""
local seen = tonumber(redis.call('GET', KEYS[2]) or '-1')
local version = tonumber(ARGV[1])
if ARGV[3] then
  if version < seen then return 0 end
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
else
  if version <= seen then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
return 1
"""
_WRITE_SHA = hashlib.sha1(_WRITE_IF_NEWER).hexdigest().encode()

UserVersion = int  # events applied to the user's state: grows with every accepted event


class RecommendationCache:
    def __init__(self, client: aioredis.Redis, project: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = f"{project}:rec:"
        self._version_prefix = f"{project}:recv:"
        self._ttl_s = ttl_s
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_url(cls, url: str, project: str, ttl_s: int, *, reconnect_s: float = 0.0) -> RecommendationCache:
        """``reconnect_s``: wait out a Redis restart that long (features/online.py)."""
        return cls(redis_client(url, reconnect_s=reconnect_s), project, ttl_s)

    def key(self, user_id: str) -> str:
        return self._prefix + user_id

    async def update(self, lists: Sequence[tuple[str, UserVersion, bytes]],
                     stale: Mapping[str, UserVersion] | None = None) -> None:
        """One round trip: cache each ``(user_id, version, serialized Recommendation)``
        (later entries win; expiring after the TTL) and drop the entries of the ``stale``
        users (user → version of their newest event) that got no new list here.

        Each write is applied only if its version is not older than the user's newest
        one in the cache, so the order in which processes' writes arrive does not matter.
        """
        newest = {user: (version, payload) for user, version, payload in lists}
        writes: list[tuple[str, UserVersion, bytes | None]] = [(u, v, p) for u, (v, p) in newest.items()]
        writes += [(u, v, None) for u, v in (stale or {}).items() if u not in newest]
        if not writes:
            return
        commands = [self._write(u, v, p) for u, v, p in writes]
        try:
            await resp.round_trip(self._client, commands)
        except NoScriptError:
            await self._client.script_load(_WRITE_IF_NEWER)  # a fresh or restarted Redis; writes are idempotent
            await resp.round_trip(self._client, commands)

    def _write(self, user_id: str, version: UserVersion, payload: bytes | None) -> bytes:
        return resp.command(*self.write_args(user_id, version, payload))

    def write_args(self, user_id: str, version: UserVersion, payload: bytes | None) -> list[bytes]:
        """The arguments of one conditional write (``payload`` None: a drop), name first."""
        args = [b"EVALSHA", _WRITE_SHA, b"2", self.key(user_id).encode(), (self._version_prefix + user_id).encode(),
                b"%d" % version, b"%d" % self._ttl_s]
        if payload is not None:
            args.append(payload)
        return args

    async def store_many(self, recommendations: Sequence[tuple[UserVersion, Recommendation]]) -> None:
        """Cache each user's list of ``version`` (later entries win), expiring after the TTL."""
        await self.update([(r.user_id, version, r.to_bytes()) for version, r in recommendations])

    async def invalidate_many(self, versions: Mapping[str, UserVersion]) -> None:
        """Drop the lists of these users older than the given versions."""
        await self.update([], versions)

    async def get(self, user_id: str) -> Recommendation | None:
        raw = await self._client.get(self.key(user_id))
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        return Recommendation.model_validate_json(raw)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    async def close(self) -> None:
        await self._client.aclose()
