"""The one ``redis.asyncio`` client (and connection pool) a process's online store uses."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def reconnecting(reconnect_s: float) -> Retry:
    """Retry a command that met a connection error or timeout (Redis restarting) for about
    ``reconnect_s`` seconds: waits of 0.1 s doubling to 1 s. 0: no retry."""
    # Python's own ConnectionError too (ECONNRESET, EPIPE raw from a socket Redis closed as it
    # restarted): the client's retry_on_error reaches only its connections' copies of this
    # Retry, not this one, which features/resp.py's round trips use (client.get_retry()).
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=int(reconnect_s) + 3 if reconnect_s > 0 else 0,
                 supported_errors=(RedisConnectionError, RedisTimeoutError, ConnectionError))  # type: ignore[arg-type]  # redis's stub: RedisError only


def redis_client(redis_url: str, *, reconnect_s: float = 0.0) -> aioredis.Redis:
    """A ``redis.asyncio`` client (bytes replies) whose commands, and the round trips of
    features/resp.py on it, wait out a Redis restart of up to ``reconnect_s`` seconds
    (:func:`reconnecting`); 0: a plain client."""
    if reconnect_s <= 0:
        return aioredis.Redis.from_url(redis_url, decode_responses=False)
    return aioredis.Redis.from_url(redis_url, decode_responses=False, retry=reconnecting(reconnect_s),
                                   # ECONNRESET can surface raw from a socket Redis closed as it restarted
                                   retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError])
