"""Each user's ``clickstream`` records on one partition, whichever client sent them.

Part of the event vocabulary, in the features layer: the state updates and the
verification read the routing header and the user's partition, the pipeline sends the
copies.

A user's state is updated by the worker that owns the user's partition, and its
per-partition offset mark (features/window.py) recognises a redelivered record
because the user's records come from that partition in order. Producers pick the
partition from the record key, but not all alike: Java's client and aiokafka hash the
key with murmur2, librdkafka (confluent-kafka, kcat) by default with crc32
(``consistent_random``). A record on any other partition than :func:`user_partition`
of its user is therefore not applied where it lands: the worker sends it on, bytes and
key unchanged, to its user's partition of ``clickstream``, with a header naming where
it came from (:data:`ROUTED_FROM`), in the same batch (under exactly_once in the
transaction that commits the original's offset, stream/transport.py). The copy is an
ordinary record of the right partition, with its own offset, and is applied there.

The original's offset is committed only after its copy was sent, so a crash in between
sends the copy again: the copies of one source partition reach the user's partition in
their original order, so the user keeps one more mark per source partition, the
highest original offset of an applied copy (``routed_source`` in features/window.py),
and a second copy of the same original is recognised exactly (features/user_state.py).
That order holds while one worker at a time sends a source partition's copies: under
exactly_once a worker that lost the partition is fenced by its transactional id; under
at_least_once one that has not yet noticed could interleave stale copies, which the
offset marks of its own records do not survive either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

ROUTED_FROM = "streamrec-routed-from"  # header: b"<partition>:<offset>" of the original record

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None


class RoutingSink(Protocol):
    async def send(self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None) -> Any: ...


def user_partition(user_id: str, partitions: int) -> int:
    """The ``clickstream`` partition of a user: the Java client's default partitioner
    (murmur2 of the key, the user id in UTF-8), which aiokafka and Faust use too."""
    return (murmur2(user_id.encode()) & 0x7FFFFFFF) % partitions


def routed_header(partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers of a copy of the record at ``partition``:``offset``."""
    return [(ROUTED_FROM, f"{partition}:{offset}".encode())]


def routed_from(headers: Headers) -> tuple[int, int] | None:
    """The (partition, offset) of the original a copy was routed from; ``None`` for a
    record as a client sent it, or a header that does not read as two integers."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in items:
        if name == ROUTED_FROM and value is not None:
            partition, _, offset = bytes(value).partition(b":")
            if partition.isdigit() and offset.isdigit():
                return int(partition), int(offset)
    return None

