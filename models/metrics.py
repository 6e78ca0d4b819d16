"""Accuracy metrics as pure functions on numpy arrays."""

from __future__ import annotations

import numpy as np


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted, np.float64) - actual) ** 2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - actual)))


def ranks(positive: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """0-based rank of each row's positive among its negatives ([n] vs [n, m]).

    Ties count against the positive, so a model that scores everything alike ranks
    the positive last rather than first.
    """
    return (negatives >= positive[:, None]).sum(axis=1)


def hit_rate(rank: np.ndarray, k: int = 10) -> float:
    """Share of rows whose positive is in the top ``k``."""
    return float(np.mean(rank < k))


def ndcg(rank: np.ndarray, k: int = 10) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    gains = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(np.mean(gains))


def mrr(rank: np.ndarray, k: int = 10) -> float:
    """Mean reciprocal rank inside the top ``k``: 1 / (rank + 1) there, else 0."""
    return float(np.mean(np.where(rank < k, 1.0 / (np.asarray(rank, np.float64) + 1.0), 0.0)))
