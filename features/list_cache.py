"""The list cache's Redis layout: a user's last list and its version, written by a script.

Every write carries the user's version (the number of events applied to the user's
state): a list is stored only if its version is at least the newest the cache has seen
for the user, and dropping an entry records its version. A list ranked for an older
event and written after a newer event's drop (by another process: the split roles)
is therefore refused (tests/stream/test_split_roles_cache.py).
"""

from __future__ import annotations

import hashlib

UserVersion = int  # events applied to the user's state: grows with every accepted event
ListWrite = tuple[str, UserVersion, bytes | None]  # (user id, version, serialized list; None: drop the entry)

# KEYS: the list, the user's version. ARGV: version, ttl (s), payload (absent: drop the list).
# A list of the newest version seen replaces the entry; a drop removes lists older than its version.
WRITE_IF_NEWER = b"""
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
_WRITE_SHA = hashlib.sha1(WRITE_IF_NEWER).hexdigest().encode()


class ListCacheKeys:
    def __init__(self, project: str) -> None:
        self._prefix = f"{project}:rec:"
        self._version_prefix = f"{project}:recv:"

    def entry(self, user_id: str) -> str:
        return self._prefix + user_id

    def version(self, user_id: str) -> str:
        return self._version_prefix + user_id

    def write_args(self, write: ListWrite, ttl_s: int) -> list[bytes]:
        """The arguments of one conditional write (payload None: a drop), name first."""
        user_id, version, payload = write
        args = [b"EVALSHA", _WRITE_SHA, b"2", self.entry(user_id).encode(), self.version(user_id).encode(),
                b"%d" % version, b"%d" % ttl_s]
        if payload is not None:
            args.append(payload)
        return args
