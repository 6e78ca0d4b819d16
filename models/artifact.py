"""Turn a trained recommender into a registry artifact: export, parity, variants,
accuracy gates, metadata; then publish (and optionally promote)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.models.config import ModelConfig
from streamrec.models.encoding import Inputs
from streamrec.models.export import export_onnx
from streamrec.models.quantize import (
    VARIANT_FILES,
    accuracy_gate,
    convert_fp16,
    quantize_int8_dynamic,
    quantize_int8_static,
)
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.registry import ModelRegistry


def _inputs_spec(n_features: int, recent_items: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "user": {"dtype": "int64", "shape": ["batch"]},
        "item": {"dtype": "int64", "shape": ["batch"]},
        "dense": {"dtype": "float32", "shape": ["batch", n_features]},
    }
    if recent_items:
        spec["recent"] = {"dtype": "int64", "shape": ["users", recent_items]}
        spec["recent_row"] = {"dtype": "int64", "shape": ["batch"]}
    return spec | {"output": {"name": "score", "dtype": "float32", "shape": ["batch"]}}


def build_variants(model: NeuralRecommender, folder: Path, check: Inputs, calibration: Inputs, cfg: ModelConfig, group: int | None) -> dict[str, Any]:
    """Write every variant into ``folder``; returns the ``variants`` metadata block.

    ``check`` rows (held out from training) drive the parity check and the gates;
    ``group`` selects the NDCG gate (implicit) instead of RMSE.
    """
    fp32 = folder / VARIANT_FILES["fp32"]
    parity = export_onnx(model.net, fp32, check)
    variants: dict[str, Any] = {"fp32": {"file": fp32.name, "parity_max_abs_diff": parity, "accepted": True}}
    limit = cfg.gate_rmse if group is None else cfg.gate_ndcg
    builders = {
        "int8": lambda out: quantize_int8_dynamic(fp32, out),
        "int8_static": lambda out: quantize_int8_static(fp32, out, calibration),
        "fp16": lambda out: convert_fp16(fp32, out),
    }
    for name, build in builders.items():
        out = build(folder / VARIANT_FILES[name])
        gate = accuracy_gate(name, fp32, out, check, limit, group)
        variants[name] = {"file": out.name, "gate": gate.as_dict(), "accepted": gate.passed}
    return variants


def publish_model(
    model: NeuralRecommender,
    registry: ModelRegistry,
    cfg: ModelConfig,
    check: Inputs,
    data: dict[str, Any],
    metrics: dict[str, Any],
    group: int | None = None,
    promote: bool = False,
) -> str:
    """Export, quantize, gate and publish; returns the new version (promoted if asked)."""
    rng = np.random.default_rng(cfg.train.seed)
    history = model.encoder.encode(model.encoder.history.iloc[rng.permutation(len(model.encoder.history))[:4096]])
    with tempfile.TemporaryDirectory(prefix="streamrec-export-") as tmp:
        variants = build_variants(model, Path(tmp), check, history, cfg, group)
        metadata = {
            "model": model.kind,
            "objective": model.objective,
            "data": data,
            "metrics": metrics,
            "features": list(model.features),
            "inputs": _inputs_spec(len(model.features), model.encoder.recent),
            "recent_items": model.encoder.recent,
            "unknown_index": 0,
            "global_mean": model.global_mean,
            "users": model.encoder.users.ids(),
            "items": model.encoder.items.ids(),
            "train_config": model.cfg.model_dump(mode="json"),
            "variants": variants,
        }
        version = registry.publish(Path(tmp), metadata)
    if promote:
        registry.promote(version)
    return version
