from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from streamrec.models.export import PARITY_TOLERANCE, ExportError, export_onnx, run_onnx
from streamrec.models.quantize import accuracy_gate, convert_fp16, quantize_int8_dynamic, quantize_int8_static
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.training import predict


@pytest.fixture(scope="module")
def exported(artifact: tuple[Path, str]) -> Path:
    """The session's one export (export_onnx ran with its parity check inside publish)."""
    return artifact[0] / "versions" / artifact[1] / "model.onnx"


def test_export_matches_pytorch_within_tolerance_at_any_batch(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    check = ranker.encoder.encode(split[1])
    for size in (1, 7, len(check)):
        rows = check.take(np.arange(size))

        assert np.max(np.abs(run_onnx(exported, rows) - predict(ranker.net, rows))) <= PARITY_TOLERANCE


def test_export_is_one_file_and_refuses_a_batch_too_small_for_a_dynamic_axis(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    assert not list(exported.parent.glob("*.data")) and (exported.parent / "model.onnx").stat().st_size > 10_000
    with pytest.raises(ExportError, match="2 rows"):
        export_onnx(ranker.net, tmp_path / "one.onnx", ranker.encoder.encode(split[1].iloc[:1]))
    assert not (tmp_path / "one.onnx").exists()


def test_int8_passes_the_gate_and_is_smaller(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    check = ranker.encoder.encode(split[1])

    int8 = quantize_int8_dynamic(exported, tmp_path / "int8.onnx")
    gate = accuracy_gate("int8", exported, int8, check, limit=0.005)

    assert gate.passed and abs(gate.delta) <= 0.005
    model = onnx.load(str(exported))
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    table_bytes = sum(4 * i.dims[0] * i.dims[1] for i in model.graph.initializer if i.name in gathered and len(i.dims) == 2 and i.dims[1] > 1)
    assert exported.stat().st_size - int8.stat().st_size >= 0.7 * table_bytes  # a table at 1 byte a value, no fp32 copy kept


def test_static_and_fp16_variants_pass_the_gate(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    check = ranker.encoder.encode(split[1])
    static = quantize_int8_static(exported, tmp_path / "static.onnx", ranker.encoder.encode(split[0].iloc[:1000]))
    half = convert_fp16(exported, tmp_path / "fp16.onnx")

    assert accuracy_gate("int8_static", exported, static, check, 0.005).passed
    assert accuracy_gate("fp16", exported, half, check, 0.005).passed


def test_the_gate_refuses_a_variant_that_loses_accuracy(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    crude = tmp_path / "crude.onnx"  # every MLP layer INT8 too, the first included: the sensitive one
    quantize_dynamic(str(exported), str(crude), weight_type=QuantType.QUInt8, op_types_to_quantize=["Gather", "MatMul", "Gemm"], reduce_range=True)

    gate = accuracy_gate("crude", exported, crude, ranker.encoder.encode(split[1]), limit=0.0)

    assert not gate.passed and gate.delta > 0.0


def test_ndcg_gate_compares_groups_with_the_positive_first(exported: Path, ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    check = ranker.encoder.encode(split[1].iloc[:500])

    gate = accuracy_gate("same", exported, exported, check, limit=0.005, group=100)

    assert gate.metric == "ndcg@10" and gate.passed and gate.delta == 0.0 and gate.max_abs_diff == 0.0
