"""Feature history: the rows the streaming agents would write, computed offline.

Runs the same pure update functions as the worker over an event log in event-time
order, so the offline store holds exactly the online values at each event time.
Two simplifications, both documented for training-set users:

* item rows are recorded at the item's own events; co-visit-only updates between
  them show up in the item's next row (later than online, never earlier: no leakage);
* the global view is one shard, ``"all"`` (online it is one shard per partition).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from streamrec.features.config import FeatureConfig
from streamrec.features.global_state import GlobalShard
from streamrec.features.item_state import ItemState, ItemUpdate, apply_item_event
from streamrec.features.messages import ClickEvent
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event

OFFLINE_SHARD = "all"


@dataclass
class HistoryStats:
    events: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def feature_history(events: Iterable[ClickEvent], cfg: FeatureConfig, stats: HistoryStats | None = None) -> Iterator[FeatureRow]:
    """Yield every row the agents would write, per view, in processing order."""
    stats = stats if stats is not None else HistoryStats()
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    shard = GlobalShard()
    for offset, event in enumerate(events):
        stats.events += 1
        update = apply_user_event(users.setdefault(event.user_id, UserState()), event, cfg, source=(0, offset))
        if not isinstance(update, UserUpdate):
            stats.skipped[update.reason] = stats.skipped.get(update.reason, 0) + 1
            continue
        yield update.row
        shard.add(event)
        yield shard.row(OFFLINE_SHARD)
        for msg in update.item_messages:
            result = apply_item_event(items.setdefault(msg.item_id, ItemState()), msg, cfg)
            if isinstance(result, ItemUpdate) and msg.event_type is not None:
                yield result.row
