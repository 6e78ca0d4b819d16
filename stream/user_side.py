"""The user side, the pipeline's second stage: admitted events applied to their users'
states and to their partitions' global shards.

Per event (features/user_state.py): a duplicate changes nothing (counted
``skipped_duplicate``); one older than the allowed lateness is refused and goes to the
DLQ with reason ``late``; an applied one yields the user's feature row, the item-side
messages (stream/item_side.py) and, for a triggering event type, a request to rank.
The batch's rows go to the writer, the users' first, then every pending shard's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamrec.features.config import FeatureConfig
from streamrec.features.global_state import GlobalShard, shard_id
from streamrec.features.messages import ItemMsg, Rejection
from streamrec.features.schema import FeatureRow
from streamrec.features.user_state import Skipped, UserState, apply_user_event
from streamrec.stream.ingest import Admitted, DeadLetters
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.ports import RowWriter
from streamrec.stream.rec_cache import UserVersion
from streamrec.stream.recommend import RecommendRequest
from streamrec.stream.state_table import StateTable


def user_version(state: UserState) -> UserVersion:
    """Events applied to the user's state: orders the user's cached lists (stream/rec_cache.py)."""
    return sum(state.activity.counts.values())


@dataclass
class Applied:
    """What a batch changed: item-side messages to send, requests to rank, the version of
    each user it changed."""

    item_messages: list[ItemMsg] = field(default_factory=list)
    to_rank: list[RecommendRequest] = field(default_factory=list)
    versions: dict[str, UserVersion] = field(default_factory=dict)
    events: int = 0  # applied events


class UserSide:
    """Applies events to the ``users`` and ``shards`` tables, marking what changed for the
    next flush (stream/processor.py). Not reentrant: the caller holds the tables' lock."""

    def __init__(self, users: StateTable[UserState], shards: StateTable[GlobalShard], writer: RowWriter,
                 cfg: FeatureConfig, dead_letters: DeadLetters, metrics: WorkerMetrics, *,
                 triggers: frozenset[str]) -> None:
        self.users, self.shards, self.writer, self.cfg = users, shards, writer, cfg
        self.dead_letters, self.metrics, self.triggers = dead_letters, metrics, triggers

    async def apply(self, events: Sequence[Admitted]) -> Applied:
        """Apply the events in order and queue the rows they changed; a late one is in the DLQ
        when this returns. Counts ``skipped_<reason>`` for each event that changed nothing."""
        applied = Applied()
        rows: list[FeatureRow] = []  # the users' rows, then every pending shard's
        changed: list[str] = []  # the user of each applied event
        for admitted in events:
            event, partition, offset = admitted.event, admitted.partition, admitted.offset
            state = self.users.get(event.user_id)
            result = apply_user_event(state, event, self.cfg, source=(partition, offset), origin=admitted.origin)
            if isinstance(result, Skipped):
                self.metrics.count(f"skipped_{result.reason}")
                if result.reason == "late":  # refused, not applied: it goes where refused events go
                    await self.dead_letters.send(admitted.message, Rejection(reason="late", field="ts", detail=result.detail),
                                                 partition, offset)
                continue
            self.users.mark(event.user_id, state, partition)
            key = shard_id(partition)
            shard = self.shards.get(key)
            shard.add(event, offset)
            self.shards.mark(key, shard, partition)
            rows.append(result.row)
            applied.item_messages.extend(result.item_messages)
            changed.append(event.user_id)
            if event.type.value in self.triggers:
                applied.to_rank.append(RecommendRequest(event.user_id, state, event))
        rows.extend(shard.row(key) for key, shard in self.shards.dirty())
        applied.events = len(changed)
        applied.versions = {user: user_version(self.users.get(user)) for user in changed}
        await self.writer.submit(rows)
        return applied
