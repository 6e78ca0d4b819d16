"""A gateway client that stands in for browsers: live streams, posted events, readiness.
Used by the demo, the benchmark and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from streamrec.stream.gateway.sse import Message, messages


def session() -> aiohttp.ClientSession:
    """A session without aiohttp's default limit of 100 connections."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


class SseClient:
    """One live stream, read in the background; ``on_message`` sees each message as it arrives."""

    def __init__(self, http: aiohttp.ClientSession, url: str, on_message: Callable[[Message], None] | None = None) -> None:
        self.url = url
        self.received: list[Message] = []
        self.status: int | None = None
        self.closed = False
        self._on_message = on_message
        self._arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self._task = asyncio.create_task(self._run(http))

    async def _run(self, http: aiohttp.ClientSession) -> None:
        try:
            async with http.get(self.url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as resp:
                self.status = resp.status
                self.opened.set()
                async for message in messages(resp.content):
                    self.received.append(message)
                    if self._on_message is not None:
                        self._on_message(message)
                    self._arrived.set()
        except aiohttp.ClientError:
            pass
        finally:
            self.closed = True
            self.opened.set()

    async def wait_for(self, n: int, timeout_s: float = 5.0) -> list[Message]:
        """The messages so far, once there are ``n`` (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while len(self.received) < n and not self.closed and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(0.01, deadline - time.monotonic()))
        return self.received

    async def list_for(self, event_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The first recommendation on this stream caused by (or covering) ``event_id``."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            received = await self.wait_for(seen + 1, max(0.01, deadline - time.monotonic()))
            for message in received[seen:]:
                if message.event == "recommendation":
                    rec = orjson.loads(message.data)
                    if event_id == rec["cause_event_id"] or event_id in rec.get("covers", ()):
                        return rec  # type: ignore[no-any-return]
            seen = len(received)
            if self.closed:
                return None
        return None

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def click(user: str, item: str = "1", **fields: Any) -> dict[str, Any]:
    """A click event of ``user`` on ``item`` now, with a fresh id."""
    return {"event_id": f"gw-{uuid.uuid4().hex}", "user_id": user, "item_id": item, "type": "click", "ts": time.time(), **fields}


async def post_event(http: aiohttp.ClientSession, base_url: str, event: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base_url}/events", json=event) as resp:
        body = await resp.json()
        if resp.status != 202:
            raise RuntimeError(f"POST /events answered {resp.status}: {body}")
        return body  # type: ignore[no-any-return]


async def wait_until_serving(http: aiohttp.ClientSession, base_url: str, *, timeout_s: float = 300.0,
                             alive: Callable[[], None] = lambda: None) -> float:
    """Until the gateway reads its partitions and a clicked event comes back as a list
    (the worker is up). ``alive`` raises when something it waits on died. Returns seconds taken."""
    began = time.monotonic()
    while True:
        alive()
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base_url}/healthz") as resp:
                if resp.status == 200 and (await resp.json())["consumer"]["assigned_partitions"] > 0:
                    break
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"the gateway at {base_url} got no partitions within {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
    stream = SseClient(http, f"{base_url}/streams/users/gateway-warmup")
    await stream.opened.wait()
    try:
        while True:
            alive()
            sent = await post_event(http, base_url, click("gateway-warmup"))
            if await stream.list_for(sent["event_id"], 3.0) is not None:
                return time.monotonic() - began
            if time.monotonic() - began > timeout_s:
                raise TimeoutError(f"no list for a clicked event within {timeout_s:.0f} s")
    finally:
        await stream.close()
