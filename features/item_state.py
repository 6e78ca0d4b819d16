"""Per-item streaming state and the item-side update (pure: no I/O, no clock).

The item agent consumes :class:`~streamrec.features.messages.ItemMsg` keyed by item id and
calls :func:`apply_item_event`. A message with a ``source`` is deduplicated by its
source (partition, offset), exactly, and is never late; one without falls back to the
user side's event-id window and lateness rule, with ``msg_id`` (the event id) as the
key (see :mod:`streamrec.features.window`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from streamrec.features.activity import Activity
from streamrec.features.config import FeatureConfig
from streamrec.features.formulas import DecayedSum, smoothed_ratio
from streamrec.features.messages import ItemId, ItemMsg
from streamrec.features.schema import ITEM_VIEW, FeatureRow, FeatureValue
from streamrec.features.user_state import Skipped
from streamrec.features.window import EventWindow, mark_applied, redelivered, too_late


_weight = itemgetter(1)


@dataclass(frozen=True)
class ItemUpdate:
    row: FeatureRow


@dataclass
class Neighbours:
    """Co-visitation weights, bounded: above 2×limit entries it keeps the top ``limit``.

    Pruning only every ``limit`` insertions keeps the cost amortised and gives new
    neighbours room to grow before they compete. Order: heavier first, ties in the
    order the neighbours first appeared (a stable sort; cheap on the hot path).
    """

    weights: dict[ItemId, float] = field(default_factory=dict)

    def add(self, item_ids: list[ItemId], limit: int) -> None:
        for item_id in item_ids:
            self.weights[item_id] = self.weights.get(item_id, 0.0) + 1.0
        if len(self.weights) > 2 * limit:
            self.weights = dict(self.top(limit))

    def top(self, k: int) -> list[tuple[ItemId, float]]:
        return sorted(self.weights.items(), key=_weight, reverse=True)[:k]


@dataclass
class ItemState:
    window: EventWindow = field(default_factory=EventWindow)
    activity: Activity = field(default_factory=Activity)
    updated_ms: int = 0
    popularity: DecayedSum = field(default_factory=DecayedSum)
    neighbours: Neighbours = field(default_factory=Neighbours)
    applied: dict[str, int] = field(default_factory=dict)  # source partition -> highest offset applied

    def features(self, cfg: FeatureConfig) -> dict[str, FeatureValue]:
        """The ``item_features`` row; ``popularity`` is as of ``popularity_ref_ms``."""
        counts = self.activity.counts
        views = counts["view"]
        top = self.neighbours.top(cfg.covisit_publish)
        values = self.activity.features()
        values.update(
            popularity=self.popularity.value,
            popularity_ref_ms=self.popularity.ref_ms,
            click_view_ratio=smoothed_ratio(counts["click"], views, cfg.click_view_prior, cfg.ratio_prior_weight),
            purchase_view_ratio=smoothed_ratio(
                counts["purchase"], views, cfg.purchase_view_prior, cfg.ratio_prior_weight
            ),
            covisit_items=[item for item, _ in top],
            covisit_weights=[weight for _, weight in top],
        )
        return values

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; ``from_dict(to_dict())`` gives an equal state."""
        return {
            "window": self.window.to_dict(),
            "activity": self.activity.to_dict(),
            "updated_ms": self.updated_ms,
            "popularity": [self.popularity.value, self.popularity.ref_ms],
            "neighbours": dict(self.neighbours.weights),
            "applied": dict(self.applied),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ItemState:
        value, ref_ms = data["popularity"]
        return cls(
            window=EventWindow.from_dict(data["window"]),
            activity=Activity.from_dict(data["activity"]),
            updated_ms=int(data["updated_ms"]),
            popularity=DecayedSum(float(value), int(ref_ms)),
            neighbours=Neighbours({str(k): float(v) for k, v in data["neighbours"].items()}),
            applied={str(k): int(v) for k, v in data.get("applied", {}).items()},
        )


def apply_item_event(state: ItemState, msg: ItemMsg, cfg: FeatureConfig) -> ItemUpdate | Skipped:
    """Apply one item message to ``state`` in place, unless already applied or too late.

    Idempotent: a message with a ``source`` is applied once per (partition,
    offset), whatever its event time (messages from one source partition arrive in
    offset order); one without is deduplicated by ``msg_id`` in the bounded id
    window and refused when later than the allowed lateness, like the user side.
    Counts, the rating mean, first/last seen and popularity do not depend on
    arrival order.
    """
    skipped = _check(state, msg, cfg)
    if skipped is not None:
        return skipped
    if msg.event_type is not None:
        _accumulate(state, msg, cfg)
    state.neighbours.add(msg.covisited, cfg.covisit_max_neighbours)
    state.updated_ms = max(state.updated_ms, msg.ts_ms)
    if msg.source is not None:
        mark_applied(state.applied, msg.source)
    else:
        state.window.remember(msg.msg_id, msg.ts_ms, state.updated_ms - cfg.allowed_lateness_ms, cfg.dedup_max_ids)
    return ItemUpdate(FeatureRow(ITEM_VIEW, msg.item_id, state.features(cfg), state.updated_ms))


def _check(state: ItemState, msg: ItemMsg, cfg: FeatureConfig) -> Skipped | None:
    if msg.source is not None:
        return Skipped("duplicate") if redelivered(state.applied, msg.source) else None
    if state.window.seen(msg.msg_id):
        return Skipped("duplicate")
    return Skipped("late") if too_late(msg.ts_ms, state.updated_ms or None, cfg.allowed_lateness_ms) else None


def _accumulate(state: ItemState, msg: ItemMsg, cfg: FeatureConfig) -> None:
    assert msg.event_type is not None
    state.activity.observe(msg.event_type.value, msg.rating, msg.ts_ms)
    state.popularity.add(cfg.affinity_weights[msg.event_type.value], msg.ts_ms, cfg.half_life_ms)
