"""The fan-out on its own: who gets which message, and what a full buffer does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from streamrec.stream.gateway.hub import Hub
from streamrec.stream.gateway.sse import frame
from tests.stream.gateway.conftest import offline_settings


def hub(tmp_path: Path, **gateway: object) -> Hub:
    return Hub(offline_settings(tmp_path, **gateway))


async def test_a_list_goes_to_its_users_streams_only(tmp_path: Path) -> None:
    h = hub(tmp_path)
    a1, a2, b = h.subscribe_user("a"), h.subscribe_user("a"), h.subscribe_user("b")
    topic = h.settings.topics.recommendations
    assert h.dispatch(topic, b"a", b'{"user_id":"a"}') == 2
    assert h.dispatch(topic, b"c", b'{"user_id":"c"}') == 0  # nobody watches c
    assert await a1.take(0.1) == [frame("recommendation", b'{"user_id":"a"}')]
    assert await a2.take(0.1) == [frame("recommendation", b'{"user_id":"a"}')]
    assert await b.take(0.05) == []


async def test_a_record_without_key_is_routed_by_its_user_id(tmp_path: Path) -> None:
    h = hub(tmp_path)
    sub = h.subscribe_user("42")
    assert h.dispatch(h.settings.topics.recommendations, None, json.dumps({"user_id": 42}).encode()) == 1
    assert len(await sub.take(0.1) or []) == 1


async def test_new_monitoring_streams_start_with_the_recent_snapshots(tmp_path: Path) -> None:
    h = hub(tmp_path, history=3)
    for n in range(5):
        h.dispatch(h.settings.topics.metrics, b"w", b'{"n":%d}' % n)
    sub = h.subscribe_metrics()
    assert await sub.take(0.1) == [frame("metrics", b'{"n":%d}' % n) for n in (2, 3, 4)]
    h.dispatch(h.settings.topics.metrics, b"w", b'{"n":5}')
    assert await sub.take(0.1) == [frame("metrics", b'{"n":5}')]
    h.broadcast_monitors("gateway", b"{}")  # the gateway's own figures: live, and for later pages too
    assert await sub.take(0.1) == [frame("gateway", b"{}")]
    assert (await h.subscribe_metrics().take(0.1) or [])[-1] == frame("gateway", b"{}")


async def test_a_full_buffer_drops_that_stream_and_no_other(tmp_path: Path) -> None:
    h = hub(tmp_path, client_buffer=4)
    slow, fast = h.subscribe_user("u"), h.subscribe_user("u")
    aborted = []
    slow.on_drop = lambda: aborted.append(True)
    topic = h.settings.topics.recommendations
    for n in range(10):
        h.dispatch(topic, b"u", b"%d" % n)
        assert len(await fast.take(0.05) or []) == 1  # the fast one reads as it goes
    assert slow.dropped and aborted == [True]
    assert await slow.take(0.01) is None
    assert h.counts["streams_dropped"] == 1 and h.clients == 1


async def test_take_waits_for_a_frame_and_returns_empty_after_the_timeout(tmp_path: Path) -> None:
    h = hub(tmp_path)
    sub = h.subscribe_user("u")
    assert await sub.take(0.02) == []
    asyncio.get_running_loop().call_later(0.02, h.dispatch, h.settings.topics.recommendations, b"u", b"{}")
    assert await sub.take(2.0) == [frame("recommendation", b"{}")]
    h.unsubscribe(sub)
    assert await sub.take(0.01) is None and h.clients == 0


def test_a_frame_carries_every_line_of_its_data() -> None:
    assert frame("x", b"a\nb") == b"event: x\ndata: a\ndata: b\n\n"
