"""The item side on fakes: item messages out one per item partition, and applied to the
items' states with one row per changed item."""

from __future__ import annotations

import zlib

from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState
from streamrec.features.messages import ITEM_BATCH, EventType, ItemMsg
from streamrec.stream.item_side import ItemSide, item_partition
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.state_table import StateTable
from tests.stream.test_processor_accounting import FakeTable, Message, RecordingSink, RecordingWriter


def _item_side(partitions: int = 4) -> tuple[ItemSide, RecordingSink, RecordingWriter, WorkerMetrics]:
    by_item, writer, metrics = RecordingSink(), RecordingWriter(), WorkerMetrics("w")
    items = StateTable(FakeTable(), ItemState.from_dict, ItemState.to_dict, ItemState)
    return ItemSide(items, by_item, writer, FeatureConfig(), metrics, partitions=partitions), by_item, writer, metrics


def _msg(n: int, item: str) -> ItemMsg:
    return ItemMsg(msg_id=f"e{n}", item_id=item, ts_ms=1000 + n, event_type=EventType.VIEW, source=(0, n))


def test_an_items_partition_is_the_crc32_of_its_id() -> None:
    assert item_partition("i42", 8) == zlib.crc32(b"i42") % 8 == item_partition("i42", 8)


async def test_messages_go_out_one_list_per_item_partition() -> None:
    side, by_item, _, _ = _item_side()
    messages = [_msg(n, f"i{n}") for n in range(12)]
    await side.send(messages)
    sent = {s["partition"]: ITEM_BATCH.validate_json(s["value"]) for s in by_item.sent}
    assert len(sent) == len(by_item.sent)
    assert sorted((m for batch in sent.values() for m in batch), key=lambda m: m.msg_id) == sorted(messages, key=lambda m: m.msg_id)
    assert all(item_partition(m.item_id, 4) == p for p, batch in sent.items() for m in batch)


async def test_a_batch_queues_one_row_per_changed_item_and_a_redelivery_none() -> None:
    side, _, writer, metrics = _item_side()
    batch = [(Message(None, ITEM_BATCH.dump_json([_msg(0, "a"), _msg(1, "b"), _msg(2, "a")])), 1, 0)]
    assert await side.apply(batch) == 3
    assert sorted((r.entity_id, r.values["event_count"]) for r in writer.rows) == [("a", 2), ("b", 1)]
    assert side.items.pending == 2
    assert await side.apply(batch) == 3
    assert len(writer.rows) == 2 and metrics.total_counts["item_skipped_duplicate"] == 3
