"""The streaming dense features for training, computed by the stream's own code.

For a query row (user, item, time t) each feature is what the stream's user or item
state held just before the first event at t: a statistic over the history events
strictly before t, never the row itself, never anything later. The values come
from replaying the history, per entity in event-time order, through
:class:`~streamrec.features.activity.Activity`, the part of ``UserState`` and
``ItemState`` that counts events and keeps the rating mean, with each row as the
event it is replayed as (``models/datasets.py``'s ``events_from``: a rated row is a
``rating`` event, an unrated one a ``purchase``). So training and serving agree by
construction; tests/models/test_feature_parity.py checks it against the user and
item update functions themselves.

One difference on purpose: with ``n_rating`` 0 the online store holds
``rating_mean`` 0.0 where training has NaN; the model treats them alike (it gates a
mean by its count, models/nets.py). Names are the online Feast references
``<view>:<feature>`` (features/schema.py), so an online scorer reads the same
columns by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.features.activity import Activity
from streamrec.features.messages import EventType
from streamrec.features.schema import ITEM_VIEW, USER_VIEW, count_feature

RATED, UNRATED = EventType.RATING.value, EventType.PURCHASE.value
N_RATING = count_feature(RATED)
STATS = ("rating_mean", N_RATING, "event_count")
MEAN_COUNT = {"rating_mean": N_RATING}
KEY_COLUMNS = {USER_VIEW: "user_id", ITEM_VIEW: "item_id"}
_MEAN, _COUNT = STATS.index("rating_mean"), STATS.index(N_RATING)

EXPLICIT_FEATURES: tuple[str, ...] = (
    f"{USER_VIEW}:rating_mean",
    f"{USER_VIEW}:{N_RATING}",
    f"{ITEM_VIEW}:rating_mean",
    f"{ITEM_VIEW}:{N_RATING}",
)
IMPLICIT_FEATURES: tuple[str, ...] = (f"{USER_VIEW}:event_count", f"{ITEM_VIEW}:event_count")


def is_count(name: str) -> bool:
    return _parse(name)[1] in (N_RATING, "event_count")


def count_partner(name: str) -> str | None:
    """The count that says whether a mean has data: ``user_features:rating_mean`` → ``user_features:n_rating``."""
    view, stat = _parse(name)
    return f"{view}:{MEAN_COUNT[stat]}" if stat in MEAN_COUNT else None


def _parse(name: str) -> tuple[str, str]:
    view, _, stat = name.partition(":")
    if view not in KEY_COLUMNS or stat not in STATS:
        raise ValueError(f"unknown feature {name!r}; views {USER_VIEW}/{ITEM_VIEW}, stats {STATS}")
    return view, stat


class ViewHistory:
    """One view's entities replayed once: :meth:`before` reads the state as of any times.

    Rows are ordered by (entity, time; ties in the history's order), and ``_after[r]``
    holds the ``STATS`` of row r's entity once it and its entity's earlier rows were
    applied. A (entity, time) pair is one int64, entity code × span + the time's rank.
    """

    def __init__(self, keys: np.ndarray, ts: np.ndarray, rating: np.ndarray) -> None:
        self._entities = pd.Index(pd.unique(keys))
        self._times = np.unique(ts)
        self._span = np.int64(len(self._times) + 1)
        codes = self._entities.get_indexer(keys).astype(np.int64)
        composite = codes * self._span + np.searchsorted(self._times, ts)
        order = np.argsort(composite, kind="stable")
        self._composite, self._codes = composite[order], codes[order]
        self._after = _replay(self._codes, ts[order], rating[order])

    def before(self, keys: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """float64 [len(keys), len(STATS)]: each key's stats over its rows strictly before ts.
        A key with no such row (or never seen) reads as a fresh state: NaN mean, zero counts."""
        codes = self._entities.get_indexer(keys).astype(np.int64)
        last = np.searchsorted(self._composite, codes * self._span + np.searchsorted(self._times, ts), side="left") - 1
        found = (codes >= 0) & (last >= 0)
        found[found] = self._codes[last[found]] == codes[found]
        out = np.tile(np.array(_stats(Activity())), (len(keys), 1))
        out[found] = self._after[last[found]]
        return out


def _replay(codes: np.ndarray, ts: np.ndarray, rating: np.ndarray) -> np.ndarray:
    """The stream's own update, row by row (rows grouped by entity, each in time order)."""
    out = np.empty((len(codes), len(STATS)))
    activity, previous = Activity(), -1
    for row, (code, seconds, value) in enumerate(zip(codes.tolist(), ts.tolist(), rating.tolist())):
        if code != previous:
            activity, previous = Activity(), code
        rated = value == value  # not NaN
        activity.observe(RATED if rated else UNRATED, value if rated else None, seconds * 1000)
        out[row] = _stats(activity)
    return out


def _stats(activity: Activity) -> list[float]:
    """The state's ``STATS`` as training holds them: without ratings the mean is NaN
    (where the online store writes 0.0)."""
    features = activity.features()
    values = [float(features[stat]) for stat in STATS]  # type: ignore[arg-type]
    if values[_COUNT] == 0:
        values[_MEAN] = float("nan")
    return values


class HistoryFeatures:
    """A history replayed once per view it needs; :meth:`at` featurises query rows."""

    def __init__(self, history: pd.DataFrame, names: tuple[str, ...]) -> None:
        self._parsed = [_parse(n) for n in names]
        ts, rating = history["ts"].to_numpy(np.int64), history["rating"].to_numpy(np.float64)
        self._views = {
            view: ViewHistory(history[KEY_COLUMNS[view]].to_numpy(object), ts, rating)
            for view in dict.fromkeys(view for view, _ in self._parsed)
        }

    def at(self, query: pd.DataFrame) -> np.ndarray:
        """Dense matrix [len(query), len(names)] float32, no leakage (query needs user_id, item_id, ts)."""
        ts = query["ts"].to_numpy(np.int64)
        stats = {view: h.before(query[KEY_COLUMNS[view]].to_numpy(object), ts) for view, h in self._views.items()}
        columns = [stats[view][:, STATS.index(stat)] for view, stat in self._parsed]
        return np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(query), 0), np.float32)


def streaming_features(history: pd.DataFrame, query: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """Dense matrix [len(query), len(names)] float32 of the named features, no leakage.

    ``history`` holds the events the stream would have seen (interaction frame shape);
    ``query`` holds the rows to featurise (needs user_id, item_id, ts). Replays the
    history on every call: hold a :class:`HistoryFeatures` to featurise many queries.
    """
    return HistoryFeatures(history, names).at(query)
