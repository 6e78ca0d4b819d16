"""A neural recommender's served variant (ONNX, INT8 by default) behind the
OfflineRecommender contract, so the evaluation table shows what a CPU worker serves
beside the PyTorch model, on the same splits."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from streamrec.models.export import export_onnx, run_onnx
from streamrec.models.quantize import VARIANT_FILES, quantize_int8_dynamic
from streamrec.models.recommenders import NeuralRecommender

PARITY_ROWS = 2048


class OnnxRecommender:
    """Scores with ``model``'s exported ``variant`` (``fp32`` or ``int8``).

    ``fit`` trains ``model`` unless it was just trained on this very frame (it follows
    ``model`` in the catalogue: one training serves both rows, and ``fit_s`` is then
    the export and quantization time alone), then exports and quantizes it and keeps
    the variant's graph in memory.
    """

    explicit_only = False

    def __init__(self, model: NeuralRecommender, variant: str = "int8") -> None:
        if variant not in ("fp32", "int8"):
            raise ValueError(f"unknown variant {variant!r}; fp32 or int8")
        self.model, self.variant = model, variant
        self.name = f"{model.name} {variant}"

    def fit(self, train: pd.DataFrame) -> None:
        encoder = getattr(self.model, "encoder", None)
        if encoder is None or encoder.history is not train:
            self.model.fit(train)
        rows = train.iloc[np.random.default_rng(self.model.cfg.seed).permutation(len(train))[:PARITY_ROWS]]
        with tempfile.TemporaryDirectory(prefix="streamrec-onnx-eval-") as tmp:
            fp32 = Path(tmp) / VARIANT_FILES["fp32"]
            export_onnx(self.model.net, fp32, self.model.encoder.encode(rows))
            path = fp32 if self.variant == "fp32" else quantize_int8_dynamic(fp32, Path(tmp) / VARIANT_FILES["int8"])
            self.graph = path.read_bytes()

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return run_onnx(self.graph, self.model.encoder.encode(rows)).astype(np.float64)
