"""The neural recommenders behind one small contract, and the catalogue of all models.

A recommender is fitted on an interaction frame and predicts a score per row: a
rating (explicit objective) or a logit (implicit). Features for every row come from
the training history strictly before the row's time, as the stream would have them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd
from torch import nn

from streamrec.models.baselines import BiasBaseline, GlobalMean, Popularity, RunningMeans
from streamrec.models.config import TrainConfig
from streamrec.models.encoding import Encoder, Inputs, IdIndex
from streamrec.models.features import EXPLICIT_FEATURES, IMPLICIT_FEATURES, count_partner, is_count
from streamrec.models.nets import BiasedMF, DenseTransform, Ranker, SeedModel
from streamrec.models.recent_ranker import RecentRanker
from streamrec.models.training import History, Objective, fit, predict, seed_everything


class OfflineRecommender(Protocol):
    """What the offline evaluation compares: ``fit(train)``, then a score per row
    (not the pipeline's recommend step, ``streamrec.stream.recommend.Recommender``)."""

    name: str
    explicit_only: bool

    def fit(self, train: pd.DataFrame) -> None: ...

    def predict(self, rows: pd.DataFrame) -> np.ndarray: ...


def dense_transform(dense: np.ndarray, features: tuple[str, ...]) -> DenseTransform:
    """Fill, log and standardisation constants taken from the training rows."""
    counts = np.array([is_count(n) for n in features])
    with np.errstate(invalid="ignore"):
        means = np.nanmean(dense, axis=0) if len(dense) else np.zeros(len(features))
    fill = np.nan_to_num(np.where(counts, 0.0, means))
    filled = np.where(np.isnan(dense), fill, dense)
    logged = np.where(counts, np.log1p(np.clip(filled, 0, None)), filled)
    partner = np.array([features.index(p) if (p := count_partner(n)) in features else -1 for n in features])
    return DenseTransform(fill, counts, logged.mean(0), logged.std(0) + 1e-6, partner)


NAMES = {"seed": "seed model", "mf": "biased MF", "ranker": "ranker", "recent": "ranker+recent"}


class NeuralRecommender:
    """Seed model, biased MF, ranker or ranker+recent, trained by :func:`streamrec.models.training.fit`.

    After ``fit``: ``net`` (the torch module), ``encoder`` (id maps + history +
    feature names) and ``history`` (the learning curve) describe the trained model.
    """

    explicit_only = False

    def __init__(
        self,
        kind: str,
        cfg: TrainConfig,
        objective: Objective = "explicit",
        content: pd.DataFrame | None = None,
        progress: bool = True,
    ) -> None:
        if kind not in NAMES:
            raise ValueError(f"unknown neural model {kind!r}")
        self.kind, self.cfg, self.objective, self.content, self.progress = kind, cfg, objective, content, progress
        self.name = NAMES[kind]
        self.explicit_only = kind == "seed"
        self.features = EXPLICIT_FEATURES if objective == "explicit" else IMPLICIT_FEATURES

    def fit(self, train: pd.DataFrame, targets: np.ndarray | None = None) -> None:
        """Train on ``train``; ``targets`` replaces the ratings (distillation from a teacher)."""
        self.encoder = Encoder.fit(train, self.features, self.cfg.recent_items if self.kind == "recent" else 0)
        if targets is None and self.objective == "implicit":
            targets = np.ones(len(train))
        data = self.encoder.encode(train, targets)
        rng = seed_everything(self.cfg.seed)  # before building: the initial weights are seeded too
        is_val = rng.random(len(data)) < self.cfg.val_fraction
        fit_part, val_part = data.take(np.flatnonzero(~is_val)), data.take(np.flatnonzero(is_val))
        self.global_mean = float(np.mean(fit_part.target)) if self.objective == "explicit" else 0.0
        self.net = self._build(fit_part)
        cfg = self.cfg.model_copy(update={"weight_decay": self.cfg.recent_weight_decay}) if self.kind == "recent" else self.cfg
        sampler = (lambda pos, r: self.encoder.sample_negatives(pos, r, self.cfg.negatives)) if self.objective == "implicit" else None
        self.history: History = fit(self.net, fit_part, val_part, cfg, self.objective, sampler, self.name, self.progress)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return predict(self.net, self.encoder.encode(rows)).astype(np.float64)

    def _build(self, data: Inputs) -> nn.Module:
        n_users, n_items = len(self.encoder.users), len(self.encoder.items)
        if self.kind == "mf":
            return BiasedMF(n_users, n_items, self.cfg.embedding_dim, self.global_mean)
        if self.kind in ("ranker", "recent"):
            net = RecentRanker if self.kind == "recent" else Ranker
            transform = dense_transform(data.dense, self.features)
            return net(n_users, n_items, self.cfg.embedding_dim, self.cfg.hidden, transform, self.global_mean, self.cfg.dropout)
        return self._seed(data)

    def _seed(self, data: Inputs) -> SeedModel:
        content = _content_matrix(self.encoder.items, self.content)
        model = SeedModel(len(self.encoder.users), len(self.encoder.items), content)
        model.init_means(_mean_by(data.user, data.target, len(self.encoder.users) + 1, self.global_mean),
                         _mean_by(data.item, data.target, len(self.encoder.items) + 1, self.global_mean),
                         self.global_mean)
        return model


def _mean_by(index: np.ndarray, values: np.ndarray, size: int, default: float) -> np.ndarray:
    counts = np.bincount(index, minlength=size)
    sums = np.bincount(index, values.astype(np.float64), minlength=size)
    return np.where(counts > 0, sums / np.maximum(counts, 1), default)


def _content_matrix(items: IdIndex, content: pd.DataFrame | None) -> np.ndarray:
    """Row 0 (unknown item) and items without content get zeros; no content → a constant 1."""
    if content is None:
        return np.ones((len(items) + 1, 1), np.float32)
    matrix = content.reindex(items.ids()).fillna(0.0).to_numpy(np.float32)
    return np.vstack([np.zeros((1, matrix.shape[1]), np.float32), matrix])


def catalogue(cfg: TrainConfig, objective: Objective, content: pd.DataFrame | None, progress: bool = True) -> list[OfflineRecommender]:
    """Every model and baseline that applies to the objective, cheapest first; for ratings
    also the ranker+recent model's INT8 ONNX variant, as a CPU worker serves it."""
    from streamrec.models.onnx_recommender import OnnxRecommender  # it imports this module

    neural: list[OfflineRecommender] = [NeuralRecommender(k, cfg, objective, content, progress) for k in ("seed", "mf", "ranker", "recent")]
    baselines: list[OfflineRecommender] = [GlobalMean(), RunningMeans(), BiasBaseline(), Popularity()]
    if objective == "explicit":
        served = OnnxRecommender(neural[-1], "int8")  # type: ignore[arg-type]
        return [m for m in baselines + neural + [served] if not isinstance(m, Popularity)]
    return [m for m in baselines + neural if not m.explicit_only]
