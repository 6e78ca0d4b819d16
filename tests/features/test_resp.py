"""Raw pipelined round trips against a real redis-server (the test stack's)."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from streamrec.features import resp

pytestmark = pytest.mark.integration


async def test_replies_stay_in_order_across_many_socket_reads(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"resp-{uuid.uuid4().hex[:8]}:".encode()
    try:
        values = [bytes([n % 251]) * (1000 + n) for n in range(400)]  # ~600 KB of replies
        await resp.round_trip(client, [resp.command(b"SET", prefix + b"%d" % n, v) for n, v in enumerate(values)])
        got = await resp.round_trip(client, [resp.command(b"GET", prefix + b"%d" % n) for n in range(len(values))])
        assert got == values
    finally:
        await client.aclose()


async def test_an_error_reply_raises_after_all_replies_and_the_connection_stays_usable(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, max_connections=1)
    key = f"resp-{uuid.uuid4().hex[:8]}".encode()
    try:
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await resp.round_trip(client, [resp.command(b"HSET", key, b"f", b"1"), resp.command(b"INCR", key),
                                           resp.command(b"HSET", key, b"g", b"2")])
        # the third command ran, and the one pooled connection reads the next replies in step
        assert await resp.round_trip(client, [resp.command(b"HGET", key, b"g"), resp.command(b"PING")]) == [b"2", b"PONG"]
    finally:
        await client.aclose()


async def test_a_raw_connection_reset_is_retried_by_a_reconnecting_clients_round_trip(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Seen in the Redis-restart fault test: ECONNRESET surfaced raw from a socket Redis
    closed, and the retry (which the client's retry_on_error does not reach) let it crash
    the worker."""
    from streamrec.features import resp
    from streamrec.features.redis_conn import redis_client

    client = redis_client("redis://127.0.0.1:1/0", reconnect_s=5)  # never connected: _round_trip is replaced
    calls: list[int] = []

    async def flaky(_client: object, commands: list[bytes]) -> list[object]:
        calls.append(len(commands))
        if len(calls) == 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return [b"PONG"]

    monkeypatch.setattr(resp, "_round_trip", flaky)
    assert await resp.round_trip(client, [b"*1\r\n$4\r\nPING\r\n"]) == [b"PONG"]
    assert calls == [1, 1]
    await client.aclose()
