"""Top-N references for leave-last-out: item-kNN, EASE, ALS and BPR.

Each follows the :class:`~streamrec.models.recommenders.OfflineRecommender` contract, so
``models/evaluation.py``'s :func:`evaluate_ranking` ranks them on the same splits,
negatives and seed as every other model: ``fit(train)`` on the binary user × item
matrix of the training interactions, then ``predict(rows)`` scores each
(user, item) row; an unknown user or item scores 0.

* :class:`ItemKNN`: cosine similarity between items' user sets, the ``neighbours``
  most similar kept per item; a user's score for an item is the sum of its
  similarities to the items the user interacted with.
* :class:`EASE`: Steck's embarrassingly shallow autoencoder, closed form
  ``B = I − P · diag(1 / diag(P))`` with ``P = (XᵀX + λI)⁻¹``; scores ``X_u · B``.
* :class:`ImplicitALS`, :class:`ImplicitBPR`: the ``implicit`` library's (0.7.3)
  alternating least squares and Bayesian personalised ranking, one thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp


class MatrixRecommender:
    """The id maps, the interaction matrix and row scoring shared by the models here:
    a subclass fills ``_fit(matrix)`` and ``_user_scores(users) -> [len(users), items]``."""

    name, explicit_only = "matrix", False

    def fit(self, train: pd.DataFrame) -> None:
        users, self.user_ids = pd.factorize(train["user_id"])
        items, self.item_ids = pd.factorize(train["item_id"])
        ones = np.ones(len(train), np.float32)
        matrix = sp.csr_matrix((ones, (users, items)), shape=(len(self.user_ids), len(self.item_ids)))
        matrix.data[:] = 1.0  # repeated (user, item) rows count once
        self.matrix = matrix
        self._fit(matrix)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        user = self.user_ids.get_indexer(rows["user_id"])
        item = self.item_ids.get_indexer(rows["item_id"])
        out = np.zeros(len(rows), np.float64)
        known = (user >= 0) & (item >= 0)
        wanted, where = np.unique(user[known], return_inverse=True)
        if len(wanted):
            out[known] = self._user_scores(wanted)[where, item[known]]
        return out

    def _fit(self, matrix: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _user_scores(self, users: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ItemKNN(MatrixRecommender):
    name = "item-kNN"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def _fit(self, matrix: sp.csr_matrix) -> None:
        norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
        scaled = matrix @ sp.diags(1.0 / np.maximum(norms, 1e-12))
        sims = (scaled.T @ scaled).toarray().astype(np.float32)
        np.fill_diagonal(sims, 0.0)
        if self.neighbours < len(sims):
            cut = np.argpartition(-sims, self.neighbours, axis=0)[self.neighbours :]
            np.put_along_axis(sims, cut, 0.0, axis=0)  # keep each item's nearest as its column
        self.sims = sims

    def _user_scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[users] @ self.sims)


class EASE(MatrixRecommender):
    name = "EASE"

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2

    def _fit(self, matrix: sp.csr_matrix) -> None:
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        precision = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
        weights = precision / -np.diag(precision)
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32)

    def _user_scores(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[users] @ self.weights)


class _Factorised(MatrixRecommender):
    """An ``implicit`` model: scores are user · item factors."""

    def _fit(self, matrix: sp.csr_matrix) -> None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns (an error under pytest) when BLAS runs threads
            model = self._model()
            model.fit(matrix, show_progress=False)
        self.user_factors, self.item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def _user_scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors.T

    def _model(self) -> Any:
        raise NotImplementedError


class ImplicitALS(_Factorised):
    name = "ALS (implicit)"

    def __init__(self, factors: int = 64, l2: float = 0.05, iterations: int = 15, alpha: float = 1.0, seed: int = 0) -> None:
        self.factors, self.l2, self.iterations, self.alpha, self.seed = factors, l2, iterations, alpha, seed

    def _model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=self.factors, regularization=self.l2, alpha=self.alpha, iterations=self.iterations,
                                       num_threads=1, random_state=self.seed)


class ImplicitBPR(_Factorised):
    name = "BPR (implicit)"

    def __init__(self, factors: int = 64, lr: float = 0.05, l2: float = 0.01, iterations: int = 100, seed: int = 0) -> None:
        self.factors, self.lr, self.l2, self.iterations, self.seed = factors, lr, l2, iterations, seed

    def _model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(factors=self.factors, learning_rate=self.lr, regularization=self.l2, iterations=self.iterations,
                                           num_threads=1, random_state=self.seed)
