"""Train → evaluate on held-out rows → export/quantize/gate → publish. Also the
default model a fresh demo serves."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.models.artifact import publish_model
from streamrec.models.config import ModelConfig, TrainConfig
from streamrec.models.datasets import Dataset, load_dataset
from streamrec.models.ease_neighbours import attach_ease_neighbours
from streamrec.models.evaluation import candidate_rows, sample_negatives
from streamrec.models.encoding import Inputs
from streamrec.models.metrics import hit_rate, mae, ndcg, ranks, rmse
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.registry import ArtifactError, ModelRegistry
from streamrec.models.splits import Protocol
from streamrec.models.training import Objective

log = logging.getLogger(__name__)
DEFAULT_EPOCHS = 8


@dataclass
class TrainResult:
    version: str
    metrics: dict[str, float]
    model: NeuralRecommender
    plot: Path | None


def _split(frame: pd.DataFrame, protocol: Protocol, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = next(iter(protocol.splits(frame, seed)))
    return frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)


def _implicit_check(model: NeuralRecommender, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[Inputs, dict[str, float]]:
    """Rows in groups of 100 (positive first, 99 unseen items) and HR/NDCG@10 on them."""
    negatives = sample_negatives(train, test, 99, seed)
    items = np.concatenate([test["item_id"].to_numpy(object)[:, None], negatives], axis=1)
    check = model.encoder.encode(candidate_rows(test, items), np.zeros(items.size, np.float32))
    table = model.predict(candidate_rows(test, items)).reshape(items.shape)
    rank = ranks(table[:, 0], table[:, 1:])
    return check, {"hr@10_sampled": hit_rate(rank), "ndcg@10_sampled": ndcg(rank)}


def train_and_publish(
    dataset: Dataset,
    cfg: ModelConfig,
    protocol: Protocol | None = None,
    promote: bool = False,
    plot: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fit the ranker on the protocol's first training split, measure it on the test
    split, publish the artifact (gates decide which variants are accepted). An implicit
    model also gets the EASE neighbours of the same training events (the ``ease``
    candidate source, models/ease_neighbours.py), attached before it is promoted."""
    objective: Objective = "explicit" if dataset.explicit else "implicit"
    protocol = protocol or (Protocol.parse("holdout:0.1") if dataset.explicit else Protocol.parse("leave-last-out"))
    train, test = _split(dataset.interactions, protocol, cfg.train.seed)
    model = NeuralRecommender(cfg.ranker, cfg.train, objective, dataset.item_content, progress)
    model.fit(train)
    if objective == "explicit":
        check = model.encoder.encode(test)
        predicted = np.clip(model.predict(test), train["rating"].min(), train["rating"].max())
        metrics = {"rmse": rmse(predicted, test["rating"]), "mae": mae(predicted, test["rating"])}
        group = None
    else:
        check, metrics = _implicit_check(model, train, test, cfg.train.seed)
        group = 100
    data = {"dataset": dataset.name, "rows": len(dataset), "train_rows": len(train), "test_rows": len(test), "protocol": f"{protocol.kind}:{protocol.value:g}"}
    registry = ModelRegistry(cfg.registry_dir)
    version = publish_model(model, registry, cfg, check, data, metrics, group)
    if objective == "implicit":
        attach_ease_neighbours(registry, version, train)
    if promote:
        registry.promote(version)
    if plot is not None:
        from streamrec.models.plots import plot_learning_curves  # matplotlib: the tools extra

        plot_learning_curves({model.name: model.history}, plot, "validation RMSE" if objective == "explicit" else "validation BCE")
    return TrainResult(version, metrics, model, plot)


def ensure_default_model(cfg: ModelConfig) -> str:
    """Return the promoted version; if there is none (or it fails verification),
    train ``cfg.ranker`` on MovieLens quickly, publish and promote it; should its INT8
    variant fail the accuracy gate, the plain ranker is trained and promoted instead
    (a CPU worker serves INT8). Blocking (~30 s on 2 cores); idempotent."""
    registry = ModelRegistry(cfg.registry_dir)
    current = registry.current_version()
    if current is not None:
        try:
            registry.verify(current)
            return current
        except ArtifactError as exc:
            log.warning("promoted model unusable (%s); training a new default", exc)
    quick: TrainConfig = cfg.train.model_copy(update={"epochs": min(cfg.train.epochs, DEFAULT_EPOCHS)})
    dataset, quick_cfg = load_dataset(cfg.default_dataset), cfg.model_copy(update={"train": quick})
    result = train_and_publish(dataset, quick_cfg)
    if cfg.ranker != "ranker" and not registry.metadata(result.version)["variants"]["int8"]["accepted"]:
        log.warning("model %s: INT8 failed its accuracy gate; the default is the plain ranker", result.version)
        result = train_and_publish(dataset, quick_cfg.model_copy(update={"ranker": "ranker"}))
    registry.promote(result.version)
    return result.version


def describe(registry: ModelRegistry) -> list[dict[str, Any]]:
    """One summary row per version (for ``streamrec models list``)."""
    current = registry.current_version()
    rows = []
    for version in registry.versions():
        meta = registry.metadata(version)
        accepted = [v for v, info in meta["variants"].items() if info.get("accepted")]
        rows.append({"version": version, "current": version == current, "model": meta.get("model"), "data": meta.get("data", {}).get("dataset"),
                     "metrics": meta.get("metrics", {}), "variants": accepted})
    return rows
