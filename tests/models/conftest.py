"""Small real models trained once per session on seeded synthetic ratings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from streamrec.models.artifact import publish_model
from streamrec.models.config import ModelConfig, TrainConfig
from streamrec.models.datasets import synthetic
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.registry import ModelRegistry

FAST = TrainConfig(epochs=6, embedding_dim=8, hidden=(16,), batch_size=256, threads=1, patience=2)


@pytest.fixture(scope="session")
def ratings() -> pd.DataFrame:
    return synthetic(n_users=120, n_items=60, n_events=4000, seed=3).interactions


@pytest.fixture(scope="session")
def split(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return ratings.iloc[:3400].reset_index(drop=True), ratings.iloc[3400:].reset_index(drop=True)


@pytest.fixture(scope="session")
def ranker(split: tuple[pd.DataFrame, pd.DataFrame]) -> NeuralRecommender:
    model = NeuralRecommender("ranker", FAST, progress=False)
    model.fit(split[0])
    return model


@pytest.fixture()
def model_config(tmp_path: Path) -> ModelConfig:
    return ModelConfig(registry_dir=tmp_path / "registry", train=FAST)


@pytest.fixture(scope="session")
def artifact(ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real export (parity-checked) with every variant, published once per session:
    exporting is the slow step, so tests copy this registry instead of exporting again."""
    root = tmp_path_factory.mktemp("template") / "models"
    cfg = ModelConfig(registry_dir=root, train=FAST)
    version = publish_model(ranker, ModelRegistry(root), cfg, ranker.encoder.encode(split[1]), {"dataset": "synthetic"}, {"rmse": 0.0})
    return root, version


@pytest.fixture()
def registry(artifact: tuple[Path, str], model_config: ModelConfig) -> ModelRegistry:
    """A private copy of the session's registry (nothing promoted yet)."""
    shutil.copytree(artifact[0], model_config.registry_dir)
    return ModelRegistry(model_config.registry_dir)


def republish(registry: ModelRegistry, version: str, tmp_path: Path) -> str:
    """A new version with the same files: what a retrain would publish, minus the training."""
    staging = tmp_path / f"staging-{len(registry.versions())}"
    shutil.copytree(registry.root / "versions" / version, staging)
    metadata = registry.metadata(version)
    return registry.publish(staging, {k: v for k, v in metadata.items() if k not in ("version", "created", "sha256")})
