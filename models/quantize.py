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
    """Node names to keep in fp32: the first Gemm/MatMul and Gathers from [n, 1] tables."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    keep = [n.name for n in model.graph.node if n.op_type == "Gather" and len(shapes.get(n.input[0], ())) == 2 and shapes[n.input[0]][1] == 1]
    first = next((n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul")), None)
    return keep + ([first] if first else [])


def quantize_int8_dynamic(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = sensitive_nodes(onnx.load(str(fp32)))
    _quiet()
    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["Gather"], nodes_to_exclude=excluded)
    model = onnx.load(str(out))
    gather_before_dequantize(model)
    onnx.save(model, str(out))
    return out


def gather_before_dequantize(model: onnx.ModelProto) -> int:
    """Rewrite Gather(DequantizeLinear(Wq), idx) as DequantizeLinear(Gather(Wq, idx)).

    Equal for per-tensor and column-wise scales; without it every call dequantizes
    the whole table. Returns the number of Gathers rewritten.
    """
    initializers = {i.name for i in model.graph.initializer}
    producers = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    rewritten, nodes = 0, []
    for node in model.graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Gather" else None
        if source is None or _axis(node) != 0:
            nodes.append(node)
            continue
        picked = f"{node.output[0]}_int8"
        nodes.append(onnx.helper.make_node("Gather", [source.input[0], node.input[1]], [picked], name=f"{node.name}_int8"))
        nodes.append(onnx.helper.make_node("DequantizeLinear", [picked, *source.input[1:]], list(node.output), name=f"{node.name}_dequantize"))
        rewritten += 1
    used = {name for n in nodes for name in n.input}
    del model.graph.node[:]
    model.graph.node.extend(n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] in producers and n.output[0] not in used))
    return rewritten


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
