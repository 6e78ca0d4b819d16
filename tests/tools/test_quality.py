"""The quality runner's serving model: trained on the protocol's first split, reused
only when the registry's promoted version was trained on the same data and split."""

from __future__ import annotations

from pathlib import Path

from streamrec.models.config import ModelConfig, TrainConfig
from streamrec.models.datasets import synthetic
from streamrec.models.registry import ModelRegistry
from streamrec.models.splits import Protocol
from streamrec.tools.quality import objective_dataset, serving_model

FAST = TrainConfig(epochs=1, embedding_dim=4, hidden=(8,), batch_size=256, threads=1, patience=1)


def test_a_model_is_reused_for_the_same_split_and_retrained_for_another(tmp_path: Path) -> None:
    data, models = synthetic(n_users=40, n_items=30, n_events=600, seed=1), ModelConfig(train=FAST)
    registry = tmp_path / "registry"

    with serving_model(data, models, Protocol("holdout", 0.2), "implicit", registry) as (_, first):
        pass
    with serving_model(data, models, Protocol("holdout", 0.2), "implicit", registry) as (cfg, again):
        served = ModelRegistry(cfg.registry_dir).current_version()
    with serving_model(data, models, Protocol("holdout", 0.3), "implicit", registry) as (_, other):
        pass

    assert not first["reused"] and again == first | {"reused": True} and served == first["version"]
    assert not other["reused"] and other["version"] != first["version"]
    assert ModelRegistry(registry).metadata(other["version"])["data"]["protocol"] == "holdout:0.3"


def test_implicit_objective_drops_the_explicit_flag_only() -> None:
    data = synthetic(n_events=50)

    assert objective_dataset(data, "explicit") is data
    assert not objective_dataset(data, "implicit").explicit
    assert objective_dataset(data, "implicit").interactions is data.interactions
