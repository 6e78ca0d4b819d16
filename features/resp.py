"""Redis commands packed by hand, sent in one raw round trip.

redis-py packs every argument of every command in Python; for a 101-key HMGET
batch of ~30 fields each that costs more than the round trip itself. Here each
command is built from prepacked pieces (the field names never change) and the
whole batch goes out with one write on a pooled ``redis.asyncio`` connection; the
replies are taken straight from the connection's hiredis reader (one ``gets`` per
reply, socket reads only when it runs dry) instead of one ``read_response``
coroutine per reply, which cost ~4x the parsing for a 200-reply batch.

It stays because it is clearly faster than redis-py's own pipeline
(``client.pipeline(transaction=False)``, hiredis parsing), whose async connection packs
every argument in Python and reads each reply through its own coroutine and response
callback. ``streamrec bench redis`` (tools/bench_redis.py) runs the worker's batches both
ways in one process, interleaved, on a private redis-server; medians of 300 rounds, on a
2-core machine loaded by other work (load average 2.1-3.7), wall time resp.py vs pipeline:
a 256-row feature write 30.6 vs 49.0 ms (1.6x); the ranker's columns of 1 user and 200
items 2.3 vs 4.8 ms (2.1x), of 32 users and 3,534 items 38 vs 97 ms (2.6x); every feature
of 1 user and 100 items 5.1 vs 8.5 ms (1.65x); the candidate inputs of 32 users 21 vs
32 ms (1.5x); 32 list-cache writes 1.4 vs 1.7 ms (1.2x). This process's CPU time per
batch is 1.4-3.4x lower. A second run (load average 3.3) gave the same ratios within 0.3
(1.64, 2.2, 2.9, 1.7, 1.5, 1.3x). It reads redis-py internals (``_AsyncHiredisParser``, a
connection's ``_parser``), so redis-py is pinned exactly: re-run the benchmark when it
moves. With any other parser it falls back to one ``read_response`` per reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*parts: bytes) -> bytes:
    """A whole RESP command from its raw arguments."""
    return b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts)


def header(argc: int, name: bytes) -> bytes:
    """The start of a command with ``argc`` arguments in all (its name included)."""
    return b"*%d\r\n" % argc + bulk(name)


async def round_trip(client: aioredis.Redis, commands: Sequence[bytes]) -> list[Any]:
    """Send packed commands in one write and read one reply each, in order.

    A Redis error reply raises ``ResponseError`` after every reply was read (the
    connection stays usable); anything else (I/O error, cancellation) drops the
    connection so no half-read replies are left on it. A client made to retry
    (``retry_on_error``: features/online.py's ``redis_client``) sends the whole batch
    again on a connection error, with its backoff: callers send idempotent batches.
    """
    if not commands:
        return []
    retry = client.get_retry()
    if retry is not None and client.get_connection_kwargs().get("retry_on_error"):
        return await retry.call_with_retry(lambda: _round_trip(client, commands), _dropped)
    return await _round_trip(client, commands)


async def _dropped(error: Exception) -> None:
    """The retry's failure hook: the failed round trip already dropped its connection."""


async def _round_trip(client: aioredis.Redis, commands: Sequence[bytes]) -> list[Any]:
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(b"".join(commands), check_health=False)
        parser = conn._parser
        if isinstance(parser, _AsyncHiredisParser) and parser._reader is not None:
            replies = await _read_hiredis(parser, len(commands))
        else:  # redis-py's pure-Python parser: one reply at a time
            replies = [await _read_one(conn) for _ in commands]
        first_error = next((r for r in replies if isinstance(r, ResponseError)), None)
    except (Exception, asyncio.CancelledError):
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    if first_error is not None:
        raise first_error
    return replies


async def _read_hiredis(parser: _AsyncHiredisParser, count: int) -> list[Any]:
    reader = parser._reader
    assert reader is not None  # checked by the caller
    replies: list[Any] = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
            continue
        if isinstance(reply, RedisConnectionError):
            raise reply
        replies.append(reply)  # an error reply arrives as a ResponseError value
    return replies


async def _read_one(conn: Any) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:
        return exc
