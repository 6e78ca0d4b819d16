"""What every entity counts: events per type, mean rating, first and last seen.

Shared by users, items and the global shards. Every part is order-insensitive
(counts add, the mean is a :class:`RunningMean`, first/last are min/max), so
out-of-order events give the same values as in-order ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamrec.features.formulas import RunningMean
from streamrec.features.messages import EVENT_TYPES
from streamrec.features.schema import FeatureValue, count_feature


_COUNT_NAMES = tuple((t, count_feature(t)) for t in EVENT_TYPES)


@dataclass
class Activity:
    counts: dict[str, int] = field(default_factory=lambda: {t: 0 for t in EVENT_TYPES})
    ratings: RunningMean = field(default_factory=RunningMean)
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None

    def observe(self, event_type: str, rating: float | None, ts_ms: int) -> None:
        self.counts[event_type] += 1
        if rating is not None:
            self.ratings.add(rating)
        self.first_seen_ms = ts_ms if self.first_seen_ms is None else min(self.first_seen_ms, ts_ms)
        self.last_seen_ms = ts_ms if self.last_seen_ms is None else max(self.last_seen_ms, ts_ms)

    def features(self) -> dict[str, FeatureValue]:
        """``n_<type>``, ``event_count``, ``rating_mean`` and ``first/last_seen_ms`` (0 = never)."""
        counts = self.counts
        values: dict[str, FeatureValue] = {name: counts[t] for t, name in _COUNT_NAMES}
        values.update(
            event_count=sum(counts.values()),
            rating_mean=self.ratings.mean,
            first_seen_ms=self.first_seen_ms or 0,
            last_seen_ms=self.last_seen_ms or 0,
        )
        return values

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "ratings": self.ratings.to_list(),
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Activity:
        return cls(
            counts={t: int(data["counts"].get(t, 0)) for t in EVENT_TYPES},
            ratings=RunningMean.from_list(data["ratings"]),
            first_seen_ms=data["first_seen_ms"],
            last_seen_ms=data["last_seen_ms"],
        )
