"""Id → index maps and the model input arrays built from interaction rows.

Index 0 of every map is reserved for ids the model has never seen (cold start): such
a user or item still scores, from the global terms, its dense features and the
embedding learned for "unknown".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from streamrec.models.features import HistoryFeatures
from streamrec.models.recent import PAD, recent_positions

UNKNOWN_INDEX = 0


class IdIndex:
    """A frozen map from string ids to 1-based indices; unknown ids map to 0."""

    def __init__(self, ids: Iterable[str]) -> None:
        self._ids: list[str] = list(dict.fromkeys(str(i) for i in ids))
        self._index = {item: pos + 1 for pos, item in enumerate(self._ids)}

    @classmethod
    def fit(cls, ids: Iterable[str]) -> IdIndex:
        return cls(sorted(set(map(str, ids))))

    def __len__(self) -> int:
        """Number of known ids (the embedding table has one more row)."""
        return len(self._ids)

    def lookup(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        get = self._index.get
        return np.fromiter((get(str(i), UNKNOWN_INDEX) for i in ids), np.int64, count=len(ids))

    def ids(self) -> list[str]:
        return list(self._ids)


@dataclass
class Inputs:
    """The three model inputs plus the target (NaN when unknown)."""

    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    dense: np.ndarray  # float32 [n, f], NaN where a mean has no data yet
    target: np.ndarray  # float32 [n]
    ts: np.ndarray  # int64 [n], event time (epoch s) the features were taken at
    recent: np.ndarray | None = None  # int64 [n, k], the user's recent item indices (0: none); only for models that read them

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Inputs:
        recent = None if self.recent is None else self.recent[rows]
        return Inputs(self.user[rows], self.item[rows], self.dense[rows], self.target[rows], self.ts[rows], recent)

    def model_inputs(self) -> tuple[np.ndarray, ...]:
        """What the net takes, in order: user, item, dense[, recent]."""
        return (self.user, self.item, self.dense) if self.recent is None else (self.user, self.item, self.dense, self.recent)

    def graph_inputs(self) -> tuple[np.ndarray, ...]:
        """What its exported graph takes: the same, and with ``recent`` each row's list
        position ``recent_row`` (here row r reads list r; models/recent_ranker.py)."""
        rows = () if self.recent is None else (np.arange(len(self), dtype=np.int64),)
        return self.model_inputs() + rows


@dataclass
class Encoder:
    """Turns interaction rows into model inputs against a fixed history (what the
    stream had seen): ids through the maps, dense features strictly before each ts
    (the history is replayed through the stream's feature code once, on first use)."""

    users: IdIndex
    items: IdIndex
    history: pd.DataFrame
    features: tuple[str, ...]
    recent: int = 0  # recent items per row (models/recent.py); 0: the model reads none

    @classmethod
    def fit(cls, history: pd.DataFrame, features: tuple[str, ...], recent: int = 0) -> Encoder:
        return cls(IdIndex.fit(history["user_id"]), IdIndex.fit(history["item_id"]), history, features, recent)

    @cached_property
    def _history_features(self) -> HistoryFeatures:
        return HistoryFeatures(self.history, self.features)

    def recent_items(self, rows: pd.DataFrame) -> np.ndarray:
        """int64 [len(rows), recent]: the item indices of each row's user's recent items
        before the row's time, newest first; 0 pads (as the online scorer fills them)."""
        if not hasattr(self, "_history_items"):
            self._history_items = self.items.lookup(self.history["item_id"].to_numpy())
        positions = recent_positions(self.history, rows, self.recent)
        return np.where(positions == PAD, 0, self._history_items[np.maximum(positions, 0)])

    def encode(self, rows: pd.DataFrame, target: np.ndarray | None = None) -> Inputs:
        if target is None:
            target = rows["rating"].to_numpy(np.float32) if "rating" in rows else np.full(len(rows), np.nan)
        return Inputs(
            self.users.lookup(rows["user_id"].to_numpy()),
            self.items.lookup(rows["item_id"].to_numpy()),
            self._history_features.at(rows),
            np.asarray(target, np.float32),
            rows["ts"].to_numpy(np.int64),
            self.recent_items(rows) if self.recent else None,
        )

    def sample_negatives(self, positives: Inputs, rng: np.random.Generator, per_positive: int) -> Inputs:
        """``per_positive`` uniformly drawn items for each positive's user at the same
        time, target 0, features as of that time (may hit an unseen positive: standard)."""
        users = np.repeat(positives.user, per_positive)
        items = rng.integers(1, len(self.items) + 1, len(users))
        user_ids, item_ids = np.asarray(self.users.ids(), object), np.asarray(self.items.ids(), object)
        rows = pd.DataFrame(
            {"user_id": user_ids[users - 1], "item_id": item_ids[items - 1], "ts": np.repeat(positives.ts, per_positive)}
        )
        return self.encode(rows, np.zeros(len(rows), np.float32))
