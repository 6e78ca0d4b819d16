"""Smaller variants of an exported fp32 model and the accuracy gate they must pass.

- ``int8``: INT8 embedding tables (weight-only, per-tensor), dequantized after the
  Gather so a call touches only the rows it reads; the MLP stays fp32 (quantizing
  its MatMuls dynamically cost +0.15 RMSE on synthetic data). For CPU.
- ``int8_static``: static QDQ INT8 with activation ranges calibrated on training rows.
- ``fp16``: all float weights and ops in half precision, inputs/outputs kept fp32, for GPU.

Sensitive nodes stay fp32 in the INT8 variants: the first MLP layer (ENVIRONMENT.md's
probe: quantizing it cost +0.048 RMSE) and the one-column bias tables (tiny, and
their per-tensor quantization error lands directly on the prediction).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from models.encoding import Inputs
from models.export import onnx_inputs, run_onnx
from models.metrics import ndcg, ranks, rmse

VARIANT_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int8_static": "model.int8_static.onnx", "fp16": "model.fp16.onnx"}


def sensitive_nodes(model: onnx.ModelProto) -> list[str]:
    """Node names to keep in fp32: the first MLP layer (every Gemm/MatMul before the
    first Relu; the serving graph splits that layer into accumulating products) and
    Gathers from [n, 1] tables."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    keep = [n.name for n in model.graph.node if n.op_type == "Gather" and len(shapes.get(n.input[0], ())) == 2 and shapes[n.input[0]][1] == 1]
    first_relu = next((k for k, n in enumerate(model.graph.node) if n.op_type == "Relu"), len(model.graph.node))
    first_layer = [n.name for n in model.graph.node[:first_relu] if n.op_type in ("Gemm", "MatMul")]
    return keep + (first_layer or [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][:1])


def quantize_int8_dynamic(fp32: Path, out: Path) -> Path:
    """Weight-only INT8 of the embedding tables: every Gather from a 2-D float table
    (bar the ``sensitive_nodes``) reads a symmetric per-tensor INT8 copy and dequantizes
    only the rows it picked. Nothing else in the graph changes (onnxruntime's
    ``quantize_dynamic`` would also rewrite each Gemm as MatMul + Add: slower kernels)."""
    model = onnx.load(str(fp32))
    quantize_gathers(model, set(sensitive_nodes(model)))
    onnx.save(model, str(out))
    return out


def quantize_gathers(model: onnx.ModelProto, excluded: set[str]) -> int:
    """Rewrite ``Gather(W, idx)`` as ``DequantizeLinear(Gather(int8(W), idx), scale, 0)``
    in place for 2-D float ``W`` (scale = max|W| / 127); returns the tables quantized."""
    tables = {i.name: i for i in model.graph.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT}
    quantized: dict[str, tuple[str, str, str]] = {}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Gather" or node.name in excluded or node.input[0] not in tables or _axis(node) != 0:
            nodes.append(node)
            continue
        names = quantized.get(node.input[0]) or _add_int8_table(model, tables[node.input[0]])
        quantized[node.input[0]] = names
        picked = f"{node.output[0]}_int8"
        nodes.append(onnx.helper.make_node("Gather", [names[0], node.input[1]], [picked], name=f"{node.name}_int8"))
        nodes.append(onnx.helper.make_node("DequantizeLinear", [picked, names[1], names[2]], list(node.output), name=f"{node.name}_dequantize"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in model.graph.initializer if i.name not in quantized or i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(quantized)


def _add_int8_table(model: onnx.ModelProto, table: onnx.TensorProto) -> tuple[str, str, str]:
    weights = numpy_helper.to_array(table).astype(np.float32)
    scale = np.float32(max(float(np.abs(weights).max()), 1e-12) / 127.0)
    values = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
    names = (f"{table.name}_quantized", f"{table.name}_scale", f"{table.name}_zero_point")
    model.graph.initializer.extend(
        [numpy_helper.from_array(values, names[0]), numpy_helper.from_array(np.array(scale, np.float32), names[1]), numpy_helper.from_array(np.array(0, np.int8), names[2])]
    )
    return names


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


class _Calibration:
    """Feeds calibration rows to onnxruntime's static quantizer in batches."""

    def __init__(self, rows: Inputs, batch: int = 512) -> None:
        self._batches = iter([onnx_inputs(rows.take(np.arange(s, min(s + batch, len(rows))))) for s in range(0, len(rows), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8_static(fp32: Path, out: Path, calibration: Inputs) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    excluded = sensitive_nodes(onnx.load(str(fp32)))
    _quiet()
    quantize_static(
        str(fp32),
        str(out),
        _Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Gather", "Gemm", "MatMul"],
        nodes_to_exclude=excluded,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


def convert_fp16(fp32: Path, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def _quiet() -> None:
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    logging.getLogger("root").setLevel(logging.ERROR)


@dataclass(frozen=True)
class GateResult:
    """Accuracy of a variant against fp32 on the same rows; ``passed`` when the loss is within the limit."""

    variant: str
    metric: str
    fp32: float
    value: float
    delta: float
    limit: float
    passed: bool
    max_abs_diff: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def accuracy_gate(variant: str, fp32: Path, candidate: Path, check: Inputs, limit: float, group: int | None = None) -> GateResult:
    """RMSE gate (``group`` None: ``check.target`` holds ratings) or NDCG@10 gate (rows in
    groups of ``group`` with the positive first). Loss = candidate worse than fp32 by."""
    base, other = run_onnx(fp32, check), run_onnx(candidate, check)
    diff = float(np.max(np.abs(base - other))) if len(check) else 0.0
    if group is None:
        ref, value = rmse(base, check.target), rmse(other, check.target)
        return GateResult(variant, "rmse", ref, value, value - ref, limit, value - ref <= limit, diff)
    ref, value = (_ndcg_grouped(scores, group) for scores in (base, other))
    return GateResult(variant, "ndcg@10", ref, value, ref - value, limit, ref - value <= limit, diff)


def _ndcg_grouped(scores: np.ndarray, group: int) -> float:
    table = scores.reshape(-1, group)
    return ndcg(ranks(table[:, 0], table[:, 1:]), 10)


def file_size(path: Path) -> int:
    return path.stat().st_size


def weights_bytes(path: Path) -> int:
    return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)
