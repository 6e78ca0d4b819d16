"""What one model version serves with: the scorer, its feature columns, its item vectors
and their search index, the EASE neighbours and the re-ranker attached to the version
when it has them (models/ease_neighbours.py, models/reranker.py), loaded together and
swapped together (models/watcher.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from streamrec.features.messages import ItemId
from streamrec.features.online import FeatureDict, ReadRequest
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, VIEWS
from streamrec.features.user_state import UserState
from streamrec.models.candidates import CandidateConfig, NeighbourLists
from streamrec.models.ease_neighbours import open_ease_neighbours
from streamrec.models.item_vectors import ItemVectors, VectorIndex, build_index, load_item_vectors
from streamrec.models.registry import ModelRegistry
from streamrec.models.reranker import Reranker, open_reranker
from streamrec.models.scorer import Scorer

log = logging.getLogger(__name__)


class FeaturePlan:
    """The model's dense columns (``<view>:<feature>``, the online names) split by view.

    Raises ``ValueError`` at model load for a name the online store does not hold,
    so a model/feature mismatch refuses the model instead of scoring garbage.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.user: list[tuple[int, str]] = []
        self.item: list[tuple[int, str]] = []
        for col, name in enumerate(self.names):
            view, _, feature = name.partition(":")
            if view not in (USER_VIEW, ITEM_VIEW) or feature not in VIEWS[view].feature_names:
                raise ValueError(f"model feature {name!r} is not an online {USER_VIEW}/{ITEM_VIEW} feature")
            if VIEWS[view].dtype(feature) not in ("float64", "int64"):
                raise ValueError(f"model feature {name!r} is not numeric")
            (self.user if view == USER_VIEW else self.item).append((col, feature))

    def item_request(self, items: Sequence[ItemId]) -> ReadRequest:
        """The item rows, only the model's columns (no rows when the model reads none)."""
        return ReadRequest(ITEM_VIEW, items if self.item else [], [f for _, f in self.item] or ["event_count"])

    def user_row(self, state: UserState) -> FeatureDict:
        """The model's user columns from the user's state: the values of the row that
        state writes (``UserState.features``), whether or not it reached the store yet."""
        if not self.user:
            return {}
        values = state.features()
        return {feature: values[feature] for _, feature in self.user}

    def dense(self, user_rows: list[FeatureDict], item_rows: list[FeatureDict], user_of: np.ndarray, item_of: np.ndarray) -> np.ndarray:
        """float32 [rows, F]: row r has the features of user ``user_of[r]`` and item
        ``item_of[r]`` (indices into the row lists); NaN where a value is missing."""
        out = np.empty((len(item_of), len(self.names)), np.float32)
        for columns, rows, index in ((self.user, user_rows, user_of), (self.item, item_rows, item_of)):
            for col, feature in columns:
                values = np.array([row.get(feature) for row in rows], np.float32)  # None becomes NaN
                out[:, col] = values[index] if len(values) else np.nan
        return out


@dataclass(frozen=True)
class ServingBundle:
    """One loaded model version with what ranking needs beside the scorer.

    ``plan`` reads the scorer's columns and, with a re-ranker, its context columns too
    (one read): ``scorer_columns`` and ``context_columns`` pick each one's from the
    plan's dense rows. Without a re-ranker lists are ordered by the fusion
    (models/candidates.py ``fuse``). ``ease``: the version's EASE neighbours (the
    ``ease`` candidate source), ``None`` when it has none or the source is off."""

    scorer: Scorer
    version: str
    plan: FeaturePlan
    vectors: ItemVectors | None
    index: VectorIndex | None
    reranker: Reranker | None = None
    scorer_columns: tuple[int, ...] | None = None  # None: the plan is the scorer's own
    context_columns: tuple[int, ...] = ()
    ease: NeighbourLists | None = None

    @classmethod
    def load(cls, scorer: Scorer, version: str, registry: ModelRegistry, cfg: CandidateConfig,
             rerank: bool = True) -> ServingBundle:
        """Blocking: reads the item vectors, builds their index, reads the EASE neighbours
        (unless ``cfg.ease`` is 0) and opens the re-ranker (unless ``rerank`` is false).
        Raises ``ValueError`` for a model feature the online store lacks
        (:class:`FeaturePlan`). A re-ranker that fails to load (bad file, a feature the
        store lacks) is logged and left out: the fusion orders the lists. So are EASE
        neighbours that fail their check, and those beside a re-ranker trained on lists
        without them (it has no inputs for that source)."""
        plan = FeaturePlan(scorer.feature_names)
        try:
            vectors = load_item_vectors(registry, version)
        except Exception as exc:  # vectors are optional: rank without the embedding source
            log.warning("model %s: no item vectors (%s); embedding candidates off", version, exc)
            vectors = None
        index = build_index(vectors, cfg) if vectors is not None else None
        ease = _ease_neighbours(registry, version) if cfg.ease else None
        bundle = cls(scorer, version, plan, vectors, index, ease=ease)
        if not rerank:
            return bundle
        try:
            reranker = open_reranker(registry, version)
            if reranker is None:
                return bundle
            ranked = bundle.with_context(reranker.feature_names, reranker)
        except Exception as exc:  # the re-ranker is optional: order by the fusion
            log.warning("model %s: re-ranker not loaded (%s); lists ordered by the fusion", version, exc)
            return bundle
        if ease is not None and not reranker.ease:
            log.warning("model %s: its re-ranker was trained without EASE candidates; that source is off", version)
            return replace(ranked, ease=None)
        return ranked

    def with_context(self, names: Sequence[str], reranker: Reranker | None = None) -> ServingBundle:
        """This bundle reading ``names`` too (the re-ranker's context columns), with
        ``reranker``. Raises ``ValueError`` for a name the online store lacks."""
        own = tuple(self.scorer.feature_names)
        union = tuple(dict.fromkeys((*own, *names)))
        column = {name: col for col, name in enumerate(union)}
        return replace(self, plan=FeaturePlan(union), reranker=reranker,
                       scorer_columns=None if union == own else tuple(range(len(own))),
                       context_columns=tuple(column[name] for name in names))

    def scorer_dense(self, dense: np.ndarray) -> np.ndarray:
        """The scorer's columns of the plan's ``dense`` rows."""
        return dense if self.scorer_columns is None else np.ascontiguousarray(dense[:, list(self.scorer_columns)])

    def context(self, dense: np.ndarray) -> np.ndarray:
        """The context columns of the plan's ``dense`` rows."""
        return dense[:, list(self.context_columns)]

    @property
    def provider(self) -> str:
        return f"{self.scorer.providers[0]}:{self.scorer.variant}"


def _ease_neighbours(registry: ModelRegistry, version: str) -> NeighbourLists | None:
    try:
        return open_ease_neighbours(registry, version)
    except Exception as exc:  # the source is optional: the others still make the list
        log.warning("model %s: EASE neighbours not loaded (%s); that source is off", version, exc)
        return None
