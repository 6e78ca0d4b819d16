"""Small real models trained once per session on seeded synthetic ratings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from models.config import ModelConfig, TrainConfig
from models.datasets import synthetic
from models.recommenders import NeuralRecommender

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
