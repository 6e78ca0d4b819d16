"""The feature schema: entities, views and every feature's name and type.

One place, read by the Feast repo definition (``features/repo.py``), by the fast
online client's value codec and by the state logic, so the three cannot drift.
Types are the five the online rows use; ``repo.py`` maps them to Feast types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import Literal, TypeAlias

from streamrec.features.messages import EVENT_TYPES

DType: TypeAlias = Literal["float64", "int64", "string", "string_list", "float64_list"]
FeatureValue: TypeAlias = float | int | str | list[str] | list[float]

USER_ENTITY = "user"
USER_KEY = "user_id"
ITEM_ENTITY = "item"
ITEM_KEY = "item_id"
SHARD_ENTITY = "shard"
SHARD_KEY = "shard_id"

USER_VIEW = "user_features"
ITEM_VIEW = "item_features"
GLOBAL_VIEW = "global_features"

TIMESTAMP_COLUMN = "event_timestamp"


@dataclass(frozen=True)
class ViewSpec:
    """A feature view: its entity join key and its ordered features."""

    name: str
    entity: str
    join_key: str
    features: tuple[tuple[str, DType], ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.features)

    def dtype(self, feature: str) -> DType:
        return self._types[feature]

    @cached_property
    def _types(self) -> dict[str, DType]:
        return dict(self.features)

    @property
    def push_source(self) -> str:
        return f"{self.name}_push"


def count_feature(event_type: str) -> str:
    """Name of the per-type event counter, e.g. ``n_purchase``."""
    return f"n_{event_type}"


_COUNTS: tuple[tuple[str, DType], ...] = tuple((count_feature(t), "int64") for t in EVENT_TYPES)
_ACTIVITY: tuple[tuple[str, DType], ...] = (
    ("event_count", "int64"),
    ("rating_mean", "float64"),
    ("first_seen_ms", "int64"),
    ("last_seen_ms", "int64"),
)

USER_FEATURES = ViewSpec(
    name=USER_VIEW,
    entity=USER_ENTITY,
    join_key=USER_KEY,
    features=_ACTIVITY
    + _COUNTS
    + (
        ("affinity_total", "float64"),
        ("recent_items", "string_list"),
        ("recent_item_affinity", "float64_list"),
        ("session_count", "int64"),
        ("session_start_ms", "int64"),
        ("session_events", "int64"),
        ("session_duration_s", "float64"),
    ),
)

ITEM_FEATURES = ViewSpec(
    name=ITEM_VIEW,
    entity=ITEM_ENTITY,
    join_key=ITEM_KEY,
    features=_ACTIVITY
    + _COUNTS
    + (
        ("popularity", "float64"),
        ("popularity_ref_ms", "int64"),
        ("click_view_ratio", "float64"),
        ("purchase_view_ratio", "float64"),
        ("covisit_items", "string_list"),
        ("covisit_weights", "float64_list"),
    ),
)

GLOBAL_FEATURES = ViewSpec(
    name=GLOBAL_VIEW,
    entity=SHARD_ENTITY,
    join_key=SHARD_KEY,
    features=_ACTIVITY + _COUNTS,
)

VIEWS: dict[str, ViewSpec] = {v.name: v for v in (USER_FEATURES, ITEM_FEATURES, GLOBAL_FEATURES)}


@dataclass(frozen=True)
class FeatureRow:
    """One entity's full feature row for one view, as of ``event_ts_ms`` (UTC ms).

    ``event_ts_ms`` is event time: the newest event the row reflects. It becomes
    Feast's ``_ts:<view>`` in the online store and the offline timestamp.
    ``touched`` lists item ids this update added to a user's seen-items set (an
    index beside Feast, see ``features/indexes.py``); coalescing rows unions it.
    """

    view: str
    entity_id: str
    values: dict[str, FeatureValue]
    event_ts_ms: int
    touched: tuple[str, ...] = ()


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_ms(ts: datetime) -> int:
    """Whole milliseconds since the epoch (UTC), exact (no float rounding)."""
    return (ts - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)
