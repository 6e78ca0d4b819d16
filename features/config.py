"""Settings of the feature layer.

The lead nests :class:`FeatureConfig` into the process ``Settings`` (for example
``STREAMREC_FEATURES__HALF_LIFE_S=3600``). Every default works on the embedded
stack; a bad value fails validation with the setting's name.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamrec.features.messages import EVENT_TYPES

_PROJECT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

DEFAULT_AFFINITY_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 3.0,
    "search": 0.0,
}


class FeatureConfig(BaseModel):
    """What the feature layer computes and how it writes.

    Times are event time. ``*_s`` are seconds, ``*_ms`` milliseconds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(default="streamrec", description="Feast project name; also prefixes the helper Redis keys.")
    recent_items: int = Field(default=20, ge=1, le=1000, description="How many distinct recent items a user keeps.")
    dedup_max_ids: int = Field(
        default=128, ge=1, le=100_000,
        description="Event ids an entity remembers to refuse a client's re-send of an event (redelivered records are "
        "caught by offset, exactly); a re-send after this many newer events counts again, no event is ever dropped.",
    )
    allowed_lateness_s: float = Field(
        default=3600.0, ge=0,
        description="Events older than an entity's newest event by more than this are refused (DLQ reason 'late').",
    )
    batch_size: int = Field(default=256, ge=1, le=100_000, description="Writer flushes at this many pending rows.")
    flush_ms: float = Field(default=5.0, gt=0, le=60_000, description="Writer flushes this long after the first pending row.")
    half_life_s: float = Field(default=86_400.0, gt=0, description="Half-life of the decayed item popularity.")
    affinity_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_AFFINITY_WEIGHTS))
    session_gap_s: float = Field(default=1800.0, gt=0, description="A pause longer than this starts a new session.")
    ratio_prior_weight: float = Field(default=10.0, ge=0, description="Pseudo-views behind the smoothed ratios.")
    click_view_prior: float = Field(default=0.1, ge=0, le=1, description="Prior click/view ratio (smoothing).")
    purchase_view_prior: float = Field(default=0.01, ge=0, le=1, description="Prior purchase/view ratio (smoothing).")
    covisit_window_items: int = Field(default=5, ge=0, le=100, description="Recent items an event co-visits with.")
    covisit_symmetric: bool = Field(
        default=False,
        description="Also update each co-visited recent item (one more item message per co-visit); "
        "off: only the event's item learns its co-visitors (one item message per event).",
    )
    covisit_window_s: float = Field(default=3600.0, ge=0, description="Only recent items this close in time co-visit.")
    covisit_max_neighbours: int = Field(default=30, ge=1, le=10_000, description="Neighbours kept per item (bounded).")
    covisit_publish: int = Field(default=20, ge=1, le=10_000, description="Neighbours written to the item feature row.")
    seen_max_items: int = Field(
        default=500, ge=1, le=100_000,
        description="Items a user's seen set keeps (the newest by event time); ranking leaves these out. "
        "Bounds Redis memory and the per-ranking read; an item seen longer ago may be recommended again.",
    )
    top_min_count: int = Field(default=5, ge=1, description="Ratings an item needs to enter the top-by-mean index.")
    registry_cache_ttl_s: int = Field(default=60, ge=0, description="Feast registry cache TTL for SDK readers.")

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if not _PROJECT_NAME.match(value):
            raise ValueError("project must hold only letters, digits and underscores")
        return value

    @field_validator("affinity_weights")
    @classmethod
    def _weights_cover_types(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {sorted(unknown)}; known: {list(EVENT_TYPES)}")
        merged = dict(DEFAULT_AFFINITY_WEIGHTS)
        merged.update(value)
        return merged

    @property
    def allowed_lateness_ms(self) -> int:
        return int(self.allowed_lateness_s * 1000)

    @property
    def half_life_ms(self) -> float:
        return self.half_life_s * 1000.0
