"""Non-neural references: global mean, running means, regularised biases, popularity.

Each follows the :class:`~streamrec.models.recommenders.OfflineRecommender` contract: ``fit(train)``
then ``predict(rows) -> float64[n]`` (a rating, or for popularity a ranking score).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.models.features import EXPLICIT_FEATURES, streaming_features


class GlobalMean:
    name, explicit_only = "global mean", True

    def fit(self, train: pd.DataFrame) -> None:
        self.mean = float(train["rating"].mean())

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return np.full(len(rows), self.mean)


class RunningMeans:
    """What the stream alone computes: μ plus the shrunk deviations of the user's and
    the item's running mean ratings as of the row's time (strictly before it)."""

    name, explicit_only = "running means", True

    def __init__(self, shrink: float = 5.0) -> None:
        self.shrink = shrink

    def fit(self, train: pd.DataFrame) -> None:
        self.seen, self.mean = train, float(train["rating"].mean())

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        u_mean, u_n, i_mean, i_n = streaming_features(self.seen, rows, EXPLICIT_FEATURES).astype(np.float64).T
        return self.mean + self._deviation(u_mean, u_n) + self._deviation(i_mean, i_n)

    def _deviation(self, mean: np.ndarray, count: np.ndarray) -> np.ndarray:
        weight = np.divide(count, count + self.shrink, out=np.zeros_like(count), where=count > 0)
        return np.nan_to_num(mean - self.mean) * weight


class BiasBaseline:
    """μ + b_u + b_i fitted by alternating least squares with L2 (Surprise's
    BaselineOnly with its defaults: reg_u 15, reg_i 10, 10 sweeps)."""

    name, explicit_only = "bias baseline", True

    def __init__(self, reg_user: float = 15.0, reg_item: float = 10.0, sweeps: int = 10) -> None:
        self.reg_user, self.reg_item, self.sweeps = reg_user, reg_item, sweeps

    def fit(self, train: pd.DataFrame) -> None:
        users, self.user_ids = pd.factorize(train["user_id"])
        items, self.item_ids = pd.factorize(train["item_id"])
        rating = train["rating"].to_numpy(np.float64)
        self.mean = float(rating.mean())
        b_user, b_item = np.zeros(len(self.user_ids)), np.zeros(len(self.item_ids))
        for _ in range(self.sweeps):
            residual = rating - self.mean - b_item[items]
            b_user = np.bincount(users, residual) / (self.reg_user + np.bincount(users))
            residual = rating - self.mean - b_user[users]
            b_item = np.bincount(items, residual) / (self.reg_item + np.bincount(items))
        self.b_user, self.b_item = b_user, b_item

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        u = self.user_ids.get_indexer(rows["user_id"])
        i = self.item_ids.get_indexer(rows["item_id"])
        return self.mean + np.where(u >= 0, self.b_user[u], 0.0) + np.where(i >= 0, self.b_item[i], 0.0)


class Popularity:
    """Ranks items by their number of training interactions (no rating prediction)."""

    name, explicit_only = "popularity", False

    def fit(self, train: pd.DataFrame) -> None:
        self.counts = train["item_id"].value_counts()

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.counts.reindex(rows["item_id"]).fillna(0.0).to_numpy(np.float64)
