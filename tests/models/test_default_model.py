from __future__ import annotations

import pytest

from streamrec.models.config import ModelConfig
from streamrec.models.pipeline import ensure_default_model
from streamrec.models.registry import ModelRegistry


@pytest.mark.slow
def test_ensure_default_model_trains_once_and_replaces_a_bad_one(model_config: ModelConfig) -> None:
    cfg = model_config.model_copy(update={"default_dataset": "synthetic"})
    registry = ModelRegistry(cfg.registry_dir)

    first = ensure_default_model(cfg)
    assert registry.current_version() == first and ensure_default_model(cfg) == first  # idempotent

    fp32 = cfg.registry_dir / "versions" / first / "model.onnx"
    fp32.write_bytes(fp32.read_bytes()[:-1])
    second = ensure_default_model(cfg)

    assert second != first and registry.current_version() == second
