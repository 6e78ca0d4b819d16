"""The user's recent items at a point in time, computed offline as the stream keeps them.

Online, each user's state holds ``FeatureConfig.recent_items`` distinct items, the
newest interaction first, ties in event time broken by item id (features/user_state.py,
``_touch_recent``); an item touched again moves to the front. For a query row (user,
time t) :func:`recent_positions` returns the same list from the history events strictly
before t: never the row itself, never anything later. The worker feeds the ranker
``state.recent`` as it stands when it scores, which holds exactly those events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAD = -1


def recent_positions(history: pd.DataFrame, query: pd.DataFrame, keep: int) -> np.ndarray:
    """int64 [len(query), keep]: positions into ``history`` of each query user's ``keep``
    most recent distinct items before the query's ``ts``, newest first; ``PAD`` fills the
    rest. Vectorised over a window of ``2 * keep`` events per query; a user who repeated
    items inside that window is finished one query at a time."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    hist = _SortedHistory(history)
    users = pd.Index(hist.user_ids).get_indexer(query["user_id"].to_numpy(object))
    ts = query["ts"].to_numpy(np.int64)
    start, end = hist.bounds(users, ts)
    window = 2 * keep
    back = end[:, None] - 1 - np.arange(window)[None, :]
    inside = back >= start[:, None]
    clipped = np.clip(back, 0, max(len(hist.ts) - 1, 0))
    valid = inside & (hist.next_ts[clipped] >= ts[:, None]) if len(hist.ts) else inside
    rank = np.cumsum(valid, axis=1)
    out = np.full((len(query), keep), PAD, np.int64)
    rows, cols = np.nonzero(valid & (rank <= keep))
    out[rows, rank[rows, cols] - 1] = hist.order[clipped[rows, cols]]
    short = np.flatnonzero((rank[:, -1] < keep) & (end - window > start)) if window else np.zeros(0, np.int64)
    for row in short:
        out[row] = hist.walk_back(int(start[row]), int(end[row]), int(ts[row]), keep)
    return out


class _SortedHistory:
    """History rows ordered by (user, ts, item id descending), so walking back from a
    user's last row before t meets items newest first, ties by ascending item id.
    ``next_ts`` is the time of the same (user, item)'s next event (max int64: none):
    an event is the item's latest before t exactly when its ``next_ts`` >= t."""

    def __init__(self, history: pd.DataFrame) -> None:
        user_codes, self.user_ids = pd.factorize(history["user_id"].to_numpy(object))
        item_codes, item_ids = pd.factorize(history["item_id"].to_numpy(object))
        item_rank = np.argsort(np.argsort(np.asarray(item_ids, dtype=str), kind="stable"))[item_codes] if len(item_ids) else item_codes
        ts = history["ts"].to_numpy(np.int64)
        self.order = np.lexsort((-item_rank, ts, user_codes))
        self.user = user_codes[self.order].astype(np.int64)
        self.ts = ts[self.order]
        pair = self.user * (len(item_ids) + 1) + item_codes[self.order]
        by_pair = np.lexsort((self.ts, pair))
        self.next_ts = np.full(len(self.ts), np.iinfo(np.int64).max, np.int64)
        same = pair[by_pair[1:]] == pair[by_pair[:-1]]
        self.next_ts[by_pair[:-1][same]] = self.ts[by_pair[1:][same]]

    def bounds(self, users: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query, the sorted rows of its user (``start``) up to its first row at or
        after ``ts`` (``end``, exclusive); empty for a user the history lacks (code -1)."""
        times = np.unique(np.concatenate([self.ts, ts]))
        span = np.int64(len(times) + 1)
        rows = self.user * span + np.searchsorted(times, self.ts)
        start = np.searchsorted(rows, users * span, side="left")
        end = np.searchsorted(rows, users * span + np.searchsorted(times, ts), side="left")
        unknown = users < 0
        start[unknown] = end[unknown] = 0
        return start, end

    def walk_back(self, start: int, end: int, ts: int, keep: int) -> np.ndarray:
        out = np.full(keep, PAD, np.int64)
        found = 0
        for pos in range(end - 1, start - 1, -1):
            if self.next_ts[pos] >= ts:
                out[found] = self.order[pos]
                found += 1
                if found == keep:
                    break
        return out

