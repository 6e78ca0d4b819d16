from __future__ import annotations


def test_served_partitions_go_to_the_back_of_the_fetch_buffer() -> None:
    from streamrec.stream.transport import to_back_of_line

    pending = {"click-0": 1, "click-1": 2, "item-0": 3}
    to_back_of_line(pending, ["click-0", "gone"])
    assert list(pending) == ["click-1", "item-0", "click-0"]
    to_back_of_line(pending, ["click-1", "item-0"])
    assert list(pending) == ["click-0", "click-1", "item-0"] and pending["item-0"] == 3


async def test_a_partition_stalled_behind_a_missing_message_is_sought_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    from collections import defaultdict
    from types import SimpleNamespace

    from intervaltree import IntervalTree

    import streamrec.stream.transport as transport
    from streamrec.stream.transport import _TunedConsumer

    consumer = object.__new__(_TunedConsumer)  # only the commit bookkeeping Faust's _new_offset reads
    consumer._acked, consumer._acked_index = defaultdict(list), defaultdict(set)
    consumer._gap, consumer._committed_offset = defaultdict(IntervalTree), defaultdict(lambda: None)
    consumer._stalled_since, consumer.reseeks = {}, 0
    sought: list[tuple[str, int]] = []

    async def seek(tp: str, offset: int) -> None:
        sought.append((tp, offset))

    consumer.seek = seek  # type: ignore[method-assign]
    assigned = {"cs-0"}
    consumer.app = SimpleNamespace(rebalancing=False)  # type: ignore[assignment]
    consumer.assignment = lambda: assigned  # type: ignore[method-assign]
    now = [100.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: now[0])
    consumer._committed_offset["cs-0"] = 10
    consumer._acked["cs-0"] = [10, 11]
    assert consumer._new_offset("cs-0") == 12  # contiguous from the committed offset: commits
    consumer._committed_offset["cs-0"] = 12
    consumer._acked["cs-0"] = [14, 15]  # 12 and 13 were never delivered
    assert consumer._new_offset("cs-0") is None
    now[0] += transport.STALLED_HEAD_RESEEK_S - 1
    assert consumer._new_offset("cs-0") is None
    await asyncio.sleep(0)
    assert sought == []  # not yet: a stall shorter than the limit is left alone
    now[0] += 1
    assert consumer._new_offset("cs-0") is None
    await asyncio.sleep(0)
    assert sought == [("cs-0", 12)] and consumer.reseeks == 1
    consumer._acked["cs-0"] = [12, 13, 14, 15]  # redelivered: commits again, the watch is cleared
    assert consumer._new_offset("cs-0") == 16 and "cs-0" not in consumer._stalled_since
    # revoked (a rebalance), then acked: messages handled after the revocation leave acks Faust
    # never commits; they are dropped rather than watched as a stall for ever
    consumer._acked["cs-0"], assigned = [18], set()
    consumer._acked_index["cs-0"] = {18}
    consumer._committed_offset["cs-0"] = 16
    for _ in range(2):
        now[0] += transport.STALLED_HEAD_RESEEK_S
        assert consumer._new_offset("cs-0") is None
    await asyncio.sleep(0)
    assert "cs-0" not in consumer._acked and "cs-0" not in consumer._acked_index
    assert sought == [("cs-0", 12)] and consumer.reseeks == 1
    # stalled while a rebalance is under way: no seek (the partition may be moving away)
    assigned = {"cs-0"}
    consumer.app.rebalancing = True
    consumer._acked["cs-0"] = [18]
    for _ in range(2):
        now[0] += transport.STALLED_HEAD_RESEEK_S
        assert consumer._new_offset("cs-0") is None
    await asyncio.sleep(0)
    assert sought == [("cs-0", 12)]
