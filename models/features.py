"""The streaming dense features, computed offline exactly as the stream computes them.

For a query row (user, item, time t) each feature is a statistic over the *history*
events strictly before t: never the row itself, never anything later. ``rating_mean``
is the plain running mean of the rated events (NaN when there are none; the online
store writes 0.0 with ``n_rating`` 0, which the model treats alike), the counts are
exact. Names are the online Feast references ``<view>:<feature>`` exactly as the
features package writes them (features/schema.py), so an online scorer reads the
same columns by name.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

USER_VIEW = "user_features"
ITEM_VIEW = "item_features"
STATS = ("rating_mean", "n_rating", "event_count")
MEAN_COUNT = {"rating_mean": "n_rating"}

EXPLICIT_FEATURES: tuple[str, ...] = (
    f"{USER_VIEW}:rating_mean",
    f"{USER_VIEW}:n_rating",
    f"{ITEM_VIEW}:rating_mean",
    f"{ITEM_VIEW}:n_rating",
)
IMPLICIT_FEATURES: tuple[str, ...] = (f"{USER_VIEW}:event_count", f"{ITEM_VIEW}:event_count")


def is_count(name: str) -> bool:
    return _parse(name)[1] in ("n_rating", "event_count")


def count_partner(name: str) -> str | None:
    """The count that says whether a mean has data: ``user_features:rating_mean`` → ``user_features:n_rating``."""
    view, stat = _parse(name)
    return f"{view}:{MEAN_COUNT[stat]}" if stat in MEAN_COUNT else None


def _parse(name: str) -> tuple[str, str]:
    view, _, stat = name.partition(":")
    if view not in (USER_VIEW, ITEM_VIEW) or stat not in STATS:
        raise ValueError(f"unknown feature {name!r}; views {USER_VIEW}/{ITEM_VIEW}, stats {STATS}")
    return view, stat


def prior_stats(
    hist_keys: np.ndarray, hist_ts: np.ndarray, hist_rating: np.ndarray, keys: np.ndarray, ts: np.ndarray
) -> dict[str, np.ndarray]:
    """Per query (key, ts): rating mean, rating count and event count over history rows
    with the same key and a timestamp strictly below ts. Vectorised, O((H + Q) log H)."""
    codes, uniques = pd.factorize(np.concatenate([hist_keys, keys]))
    times = np.unique(np.concatenate([hist_ts, ts]))
    span = np.int64(len(times) + 1)
    composite = codes.astype(np.int64) * span + np.searchsorted(times, np.concatenate([hist_ts, ts]))
    hist_c, query_c = composite[: len(hist_keys)], composite[len(hist_keys) :]
    order = np.argsort(hist_c, kind="stable")
    hist_sorted = hist_c[order]
    rated = ~np.isnan(hist_rating[order])
    rating_sum = np.concatenate([[0.0], np.cumsum(np.where(rated, hist_rating[order], 0.0))])
    rating_n = np.concatenate([[0], np.cumsum(rated)])
    end = np.searchsorted(hist_sorted, query_c, side="left")
    start = np.searchsorted(hist_sorted, codes[len(hist_keys) :].astype(np.int64) * span, side="left")
    n_rated = rating_n[end] - rating_n[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_rated > 0, (rating_sum[end] - rating_sum[start]) / np.maximum(n_rated, 1), np.nan)
    return {"rating_mean": mean, "n_rating": n_rated.astype(np.float64), "event_count": (end - start).astype(np.float64)}


def streaming_features(history: pd.DataFrame, query: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """Dense matrix [len(query), len(names)] float32 of the named features, no leakage.

    ``history`` holds the events the stream would have seen (interaction frame shape);
    ``query`` holds the rows to featurise (needs user_id, item_id, ts).
    """
    hist_ts, query_ts = history["ts"].to_numpy(np.int64), query["ts"].to_numpy(np.int64)
    rating = history["rating"].to_numpy(np.float64)
    stats = {}
    for view, column in ((USER_VIEW, "user_id"), (ITEM_VIEW, "item_id")):
        if any(_parse(n)[0] == view for n in names):
            stats[view] = prior_stats(
                history[column].to_numpy(object), hist_ts, rating, query[column].to_numpy(object), query_ts
            )
    columns = [stats[view][stat] for view, stat in map(_parse, names)]
    return np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(query), 0), np.float32)

