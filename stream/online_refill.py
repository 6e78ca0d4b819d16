"""The online store refilled from the worker's tables when Redis lost its data.

Redis holds no state of its own: every feature row is an entity's whole state, kept in
the worker's tables (and their changelogs). A Redis restarted empty (no persistence, a
failover to an empty replica, a FLUSHALL) would otherwise serve nothing for an entity
until its next event. Each worker keeps a marker of its own in the online store
(``OnlineFeatureStore.set_marker``); a timer (``STREAMREC_WORKER__ONLINE_CHECK_S``)
looks for it, and when it is gone the worker sets it again and rewrites the rows of
every user, item and global shard of the partitions it owns, through its micro-batching
writer (after a worker's own rows, in order). The marker is set before the process's
first row reaches Redis (the writer's ``before_first_write``, stream/clients.py): a
Redis lost after rows were written but before the first check (a check waits for
recovery and rebalances to end) was never refilled. A worker's first check, with
no row written yet, only sets the marker: at a start its tables are as of their
changelogs, which may be behind the rows the worker before it wrote (until the
redelivered records bring them forward), and writing them then would take rows back.
(So Redis losing its data while no worker runs is not repaired: rows come back entity
by entity with their next events.)

Only partitions the worker owns as active are rewritten: its tables may also hold
standby copies or keys of partitions it gave away, which may be behind their owner's.
The seen-items sets (features/indexes.py) come back only as far as the users' recent
items; everything else a row's readers use is in the rows and the item indexes rebuilt
with them.
"""

from __future__ import annotations

from collections.abc import Callable

from streamrec.features.config import FeatureConfig
from streamrec.features.global_state import GlobalShard, shard_id
from streamrec.features.item_state import ItemState
from streamrec.features.online import OnlineFeatureStore
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, FeatureRow
from streamrec.features.user_state import UserState


class Marker:
    """This worker's marker in the online store: present while the store holds what the worker wrote."""

    def __init__(self, store: OnlineFeatureStore, worker_id: str) -> None:
        self._store, self.worker_id = store, worker_id
        self.written = False  # set by this process at least once

    async def present(self) -> bool:
        return await self._store.marker_present(self.worker_id)

    async def set(self) -> None:
        await self._store.set_marker(self.worker_id)
        self.written = True

    async def close(self) -> None:
        """Nothing to release: the marker shares the worker's store, which the worker closes."""


def user_row(user: str, state: UserState, partitions: set[int]) -> FeatureRow | None:
    """The user's row if its records came from ``partitions``; its seen-items set gets
    the recent items back."""
    if not {int(p) for p in state.applied if p.isdigit()} & partitions:
        return None
    return FeatureRow(USER_VIEW, user, state.features(), state.activity.last_seen_ms or 0,
                      tuple(r.item_id for r in state.recent))


def item_row(item: str, state: ItemState, partitions: set[int], partition_of: Callable[[str], int],
             cfg: FeatureConfig) -> FeatureRow | None:
    """The item's row if its repartition-topic partition is in ``partitions``."""
    return FeatureRow(ITEM_VIEW, item, state.features(cfg), state.updated_ms) if partition_of(item) in partitions else None


def shard_row(key: str, state: GlobalShard, partitions: set[int]) -> FeatureRow | None:
    """A global shard's row if it is one of ``partitions``' (one per ``clickstream`` partition)."""
    return state.row(key) if key in {shard_id(p) for p in partitions} else None
