"""Global counts and mean rating, kept in shards that merge exactly.

A single global key would funnel every event through one partition. Instead the
user agent keeps one :class:`GlobalShard` per input partition (Faust table key
``shard_id(partition)``) and feeds it only events that :func:`apply_user_event`
accepted, so redelivery is already filtered out. Readers merge the shards
(:func:`merge_shards`): counts add up and the means merge with Chan's formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamrec.features.activity import Activity
from streamrec.features.formulas import RunningMean
from streamrec.features.messages import EVENT_TYPES, ClickEvent
from streamrec.features.schema import GLOBAL_VIEW, FeatureRow, FeatureValue, count_feature, epoch_ms


def shard_id(partition: int) -> str:
    return f"p{partition}"


@dataclass
class GlobalShard:
    activity: Activity = field(default_factory=Activity)
    applied: int = -1  # the highest offset counted: a shard's records arrive in offset order

    def add(self, event: ClickEvent, offset: int | None = None) -> bool:
        """Count an event that the user side accepted, once per record: one at or below the
        highest ``offset`` counted is not counted again (False). After a crash the shard's
        state may be ahead of its users' (stream/processor.py writes it first), and the
        users then apply those records again."""
        if offset is not None:
            if offset <= self.applied:
                return False
            self.applied = offset
        self.activity.observe(event.type.value, event.rating, epoch_ms(event.ts))
        return True

    def features(self) -> dict[str, FeatureValue]:
        return self.activity.features()

    def row(self, shard: str) -> FeatureRow:
        return FeatureRow(GLOBAL_VIEW, shard, self.features(), self.activity.last_seen_ms or 0)

    def to_dict(self) -> dict[str, Any]:
        return {**self.activity.to_dict(), "applied": self.applied}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GlobalShard:
        return cls(Activity.from_dict(data), int(data.get("applied", -1)))


def merge_shards(rows: list[dict[str, Any]]) -> dict[str, FeatureValue]:
    """Merge ``global_features`` rows (as read back) into one global row.

    Shards never written (all values ``None``) are ignored.
    """
    merged = Activity()
    for row in rows:
        if row.get("event_count") is None:
            continue
        part = Activity(
            counts={t: int(row[count_feature(t)]) for t in EVENT_TYPES},
            ratings=RunningMean(int(row[count_feature("rating")]), float(row["rating_mean"])),
            first_seen_ms=int(row["first_seen_ms"]) or None,
            last_seen_ms=int(row["last_seen_ms"]) or None,
        )
        merged = _merge(merged, part)
    return merged.features()


def _merge(a: Activity, b: Activity) -> Activity:
    firsts = [t for t in (a.first_seen_ms, b.first_seen_ms) if t is not None]
    lasts = [t for t in (a.last_seen_ms, b.last_seen_ms) if t is not None]
    return Activity(
        counts={t: a.counts[t] + b.counts[t] for t in EVENT_TYPES},
        ratings=a.ratings.merge(b.ratings),
        first_seen_ms=min(firsts, default=None),
        last_seen_ms=max(lasts, default=None),
    )
