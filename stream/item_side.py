"""The item side, the pipeline's third stage, at both ends of the repartition topic.

The user side's item messages (features/messages.py ``ItemMsg``) go out one message per
item partition, a JSON list (``ITEM_BATCH``), to the partition chosen by the item id;
the item agent applies each to its item's state (features/item_state.py) and queues the
changed items' feature rows.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Sequence

from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.messages import ITEM_BATCH, ItemMsg
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import Skipped
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.ports import Consumed, RowWriter, Sink
from streamrec.stream.state_table import StateTable


def item_partition(item_id: str, partitions: int) -> int:
    """The repartition topic's partition for an item: stable across processes and languages."""
    return zlib.crc32(item_id.encode()) % partitions


class ItemSide:
    """Sends item messages on ``by_item``; applies them to the ``items`` table, marking what
    changed for the next flush (stream/processor.py). :meth:`apply` is not reentrant: the
    caller holds the tables' lock."""

    def __init__(self, items: StateTable[ItemState], by_item: Sink, writer: RowWriter, cfg: FeatureConfig,
                 metrics: WorkerMetrics, *, partitions: int) -> None:
        self.items, self.by_item, self.writer, self.cfg = items, by_item, writer, cfg
        self.metrics, self.partitions = metrics, partitions

    async def send(self, messages: Sequence[ItemMsg]) -> None:
        """One message per item partition, in the order the partitions first occur."""
        by_partition: dict[int, list[ItemMsg]] = defaultdict(list)
        for message in messages:
            by_partition[item_partition(message.item_id, self.partitions)].append(message)
        for partition, batch in by_partition.items():
            await self.by_item.send(value=ITEM_BATCH.dump_json(batch, exclude_none=True), partition=partition)

    async def apply(self, batch: Sequence[Consumed]) -> int:
        """Apply a batch of ``by_item`` messages and queue each changed item's last row; how
        many item messages it held. A duplicate counts ``item_skipped_duplicate``."""
        changed: dict[str, FeatureRow] = {}
        n = 0
        for message, partition, _offset in batch:
            for update in ITEM_BATCH.validate_json(message.value):
                n += 1
                state = self.items.get(update.item_id)
                result = apply_item_event(state, update, self.cfg)
                if isinstance(result, Skipped):
                    self.metrics.count(f"item_skipped_{result.reason}")
                    continue
                self.items.mark(update.item_id, state, partition)
                changed[update.item_id] = result.row
        await self.writer.submit(list(changed.values()))
        return n
