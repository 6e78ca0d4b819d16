"""Smaller variants of an exported fp32 model and the accuracy gate they must pass.

- ``int8``: INT8 embedding tables (weight-only, per-tensor) read row by row; for the
  serving ranker the scales are folded into the layers that consume the rows, so no
  dequantize op runs (:func:`fold_ranker_tables`), elsewhere each Gather is followed
  by a DequantizeLinear. The MLP stays fp32 (quantizing its MatMuls dynamically cost
  +0.15 RMSE on synthetic data). For CPU.
- ``int8_static``: static QDQ INT8 with activation ranges calibrated on training rows.
- ``fp16``: all float weights and ops in half precision, inputs/outputs kept fp32, for GPU.

Sensitive nodes stay fp32 in the INT8 variants: the first MLP layer (an early
probe: quantizing it cost +0.048 RMSE) and, outside the folded ranker graph, the
one-column bias tables (tiny, and their per-tensor quantization error lands directly
on the prediction; the fold gives each bias its own scale, centred on its range).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from streamrec.models.encoding import Inputs
from streamrec.models.export import onnx_inputs, run_onnx
from streamrec.models.metrics import ndcg, ranks, rmse

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
    """Weight-only INT8 of the embedding tables, symmetric per tensor: the serving
    ranker's graph through :func:`fold_ranker_tables` (no dequantize step at all),
    any other graph through :func:`quantize_gathers`. The MLP stays fp32 (onnxruntime's
    ``quantize_dynamic`` would also rewrite each Gemm as MatMul + Add: slower kernels)."""
    model = onnx.load(str(fp32))
    folded = fold_ranker_tables(model)
    # after a fold only a table whose term joins a side's vectors is left (read per user)
    quantize_gathers(model, set() if folded else set(sensitive_nodes(model)))
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
    scale = _symmetric_scale(weights)
    values = _to_int8(weights, scale)
    names = (f"{table.name}_quantized", f"{table.name}_scale", f"{table.name}_zero_point")
    model.graph.initializer.extend(
        [numpy_helper.from_array(values, names[0]), numpy_helper.from_array(np.array(scale, np.float32), names[1]), numpy_helper.from_array(np.array(0, np.int8), names[2])]
    )
    return names


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


@dataclass(frozen=True)
class _RankerTail:
    """Where the serving ranker's graph uses its tables: Gathers of the two vector
    tables (the Mul's inputs, in order) and of the two bias tables (same order),
    ``ReduceSum(Mul) + (bias + bias)``, and the first-layer Gemms reading the vectors.
    ``implicit`` names, per side, a table whose (linear) term the graph adds to that
    side's gathered vector before use (models/recent_ranker.py), or None."""

    mul: onnx.NodeProto
    vectors: tuple[onnx.NodeProto, onnx.NodeProto]
    implicit: tuple[str | None, str | None]
    biases: tuple[onnx.NodeProto, onnx.NodeProto]
    reduce: onnx.NodeProto
    adds: tuple[onnx.NodeProto, onnx.NodeProto]
    first_layer: tuple[onnx.NodeProto, ...]


def fold_ranker_tables(model: onnx.ModelProto) -> bool:
    """INT8 tables for the serving ranker's graph with no dequantize op; in place,
    False (graph untouched) when the graph lacks the pattern of :class:`_RankerTail`.

    Each vector table becomes int8 (symmetric, per tensor), gathered and Cast to
    float, with two more columns: its own bias (int8 around the bias range's centre,
    its own scale) and a column of 1s that multiplies the other table's bias in the
    dot product. The scales go where the rows are consumed: into the first-layer
    weights (scaled, zero rows for the bias columns) and into one Gemm replacing
    ``ReduceSum(u * i) + b_u + b_i`` by ``(u * i) @ w + c`` (w: the product of the
    vector scales, then the two bias scales; c: the bias centres). The graph thus has
    two Casts more and five ops fewer (two bias Gathers, ReduceSum, two Adds, less
    the Gemm) than fp32: at ~100 rows a call costs mostly per-op overhead. A term added
    to a side's gathered vector (the ranker+recent model's implicit factors) comes from
    a table the fold divides by that side's scale and widens by two zero columns, so it
    adds to the int8 rows in their own units (:func:`quantize_int8_dynamic` then makes
    that table int8 with a DequantizeLinear, on the few users' rows). A bias is
    off by at most half its scale (range / 508); it lands on the score directly, but
    its error is small next to the vectors' (the accuracy gate measures both)."""
    tail = _find_ranker_tail(model)
    if tail is None:
        return False
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    vectors = [arrays[g.input[0]].astype(np.float32) for g in tail.vectors]
    biases = [arrays[g.input[0]][:, 0].astype(np.float64) for g in tail.biases]
    scales = [_symmetric_scale(v) for v in vectors]
    centres = [(b.max() + b.min()) / 2 for b in biases]
    steps = [_symmetric_scale(b - c) for b, c in zip(biases, centres)]
    columns = [_to_int8(b - c, t).reshape(-1, 1) for b, c, t in zip(biases, centres, steps)]
    ones = [np.ones((len(v), 1), np.int8) for v in vectors]
    tables = (np.hstack([_to_int8(vectors[0], scales[0]), columns[0], ones[0]]), np.hstack([_to_int8(vectors[1], scales[1]), ones[1], columns[1]]))
    dot = [scales[0] * scales[1]] * vectors[0].shape[1] + steps
    prefix = f"{tail.mul.name}_folded"
    added = {f"{g.input[0]}_quantized": t for g, t in zip(tail.vectors, tables)}
    added |= {f"{prefix}_dot": np.asarray(dot, np.float32).reshape(-1, 1), f"{prefix}_centre": np.asarray([sum(centres)], np.float32)}
    scale_of = {name: s for name, s in zip(tail.mul.input, scales)}
    for gemm in tail.first_layer:
        weight = arrays[gemm.input[1]] * scale_of[gemm.input[0]]
        added[f"{gemm.name}_weight_folded"] = np.vstack([weight, np.zeros((2, weight.shape[1]), np.float32)]).astype(np.float32)
        gemm.input[1] = f"{gemm.name}_weight_folded"
    for table, scale in zip(tail.implicit, scales):
        if table is not None:
            added[f"{table}_folded"] = np.hstack([arrays[table] / scale, np.zeros((len(arrays[table]), 2))]).astype(np.float32)
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in added.items())
    _rewire_tail(model, tail, prefix)
    return True


def _rewire_tail(model: onnx.ModelProto, tail: _RankerTail, prefix: str) -> None:
    dropped = {id(n) for n in (*tail.biases, *tail.adds)}
    nodes = []
    for node in model.graph.node:
        if id(node) in dropped:
            continue
        if any(node.input[0] == table for table in tail.implicit if table is not None):
            nodes.append(onnx.helper.make_node(node.op_type, [f"{node.input[0]}_folded", *node.input[1:]], list(node.output),
                                               name=node.name, domain=node.domain))
            nodes[-1].attribute.extend(node.attribute)
        elif any(node is v for v in tail.vectors):
            picked = f"{node.output[0]}_int8"
            nodes.append(onnx.helper.make_node("Gather", [f"{node.input[0]}_quantized", node.input[1]], [picked], name=f"{node.name}_int8"))
            nodes.append(onnx.helper.make_node("Cast", [picked], list(node.output), name=f"{node.name}_cast", to=onnx.TensorProto.FLOAT))
        elif node is tail.reduce:
            nodes.append(onnx.helper.make_node("Gemm", [tail.mul.output[0], f"{prefix}_dot", f"{prefix}_centre"], [tail.adds[1].output[0]], name=f"{prefix}_dot"))
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _find_ranker_tail(model: onnx.ModelProto) -> _RankerTail | None:
    index = _GraphIndex(model.graph)
    return next((tail for mul in model.graph.node if mul.op_type == "Mul" and (tail := _tail_at(index, mul)) is not None), None)


class _GraphIndex:
    """Producers and consumers of each tensor name, and the 2-D float initializers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.tables = {i.name: tuple(i.dims) for i in graph.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def gather(self, name: str, bias: bool) -> onnx.NodeProto | None:
        """The row-Gather producing ``name`` from a bias ([n, 1]) or vector table."""
        node = self.producer.get(name)
        if node is None or node.op_type != "Gather" or _axis(node) != 0 or node.input[0] not in self.tables:
            return None
        return node if (self.tables[node.input[0]][1] == 1) == bias else None

    def vector(self, name: str) -> tuple[onnx.NodeProto | None, str | None]:
        """The vector-table Gather behind ``name``: producing it, or feeding only the
        ``Add`` that produces it; then also the one table upstream of the Add's other
        input (``None``: no such Add; the Gather is ``None`` when neither shape holds)."""
        direct = self.gather(name, bias=False)
        add = self.producer.get(name)
        if direct is not None or add is None or add.op_type != "Add":
            return direct, None
        for own, other in (add.input, add.input[::-1]):
            gathered = self.gather(own, bias=False)
            if gathered is not None and self.sole(own, "Add") is add:
                tables = self.tables_above(other)
                return (gathered, tables[0]) if len(tables) == 1 else (None, None)
        return None, None

    def tables_above(self, name: str) -> list[str]:
        """The 2-D float tables ``name`` is computed from (Gathers' data inputs)."""
        found, todo, seen = [], [name], set()
        while todo:
            node = self.producer.get(todo.pop())
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type == "Gather" and node.input[0] in self.tables:
                found.append(node.input[0])
            todo.extend(node.input)
        return found

    def sole(self, name: str, op: str) -> onnx.NodeProto | None:
        """The only consumer of ``name``, if it is an ``op``."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None


def _tail_at(index: _GraphIndex, mul: onnx.NodeProto) -> _RankerTail | None:
    (u, u_extra), (i, i_extra) = (index.vector(name) for name in mul.input)
    reduce = index.sole(mul.output[0], "ReduceSum")
    if u is None or i is None or u.input[0] == i.input[0] or u.input[1] == i.input[1] or reduce is None or not _sums_last_axis(reduce, index.graph):
        return None
    total = index.sole(reduce.output[0], "Add")
    pair = index.producer.get(next((n for n in total.input if n != reduce.output[0]), "")) if total is not None else None
    if total is None or pair is None or pair.op_type != "Add" or index.sole(pair.output[0], "Add") is not total:
        return None
    biases = [b for name in pair.input if (b := index.gather(name, bias=True)) is not None and index.sole(b.output[0], "Add") is pair]
    by_index = {b.input[1]: b for b in biases}
    first = tuple(n for v in mul.input for n in index.consumers[v] if n is not mul)
    if {u_extra, i_extra} & {u.input[0], i.input[0]} or any(len(index.consumers[t]) != 1 for t in (u_extra, i_extra) if t):
        return None
    if len(biases) != 2 or set(by_index) != {u.input[1], i.input[1]} or not all(_plain_gemm(n, index.tables) for n in first):
        return None
    return _RankerTail(mul, (u, i), (u_extra, i_extra), (by_index[u.input[1]], by_index[i.input[1]]), reduce, (pair, total), first)


def _plain_gemm(node: onnx.NodeProto, tables: dict[str, tuple[int, ...]]) -> bool:
    """A Gemm ``A @ B (+ C)`` with a gathered row block as A and a weight as B."""
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    plain = attributes.get("transA", 0) == 0 and attributes.get("transB", 0) == 0 and attributes.get("alpha", 1.0) == 1.0
    return node.op_type == "Gemm" and plain and node.input[1] in tables


def _sums_last_axis(node: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    axes = list(attributes.get("axes", []))
    if len(node.input) > 1:
        axes = [int(a) for i in graph.initializer if i.name == node.input[1] for a in numpy_helper.to_array(i).reshape(-1)]
    return attributes.get("keepdims", 1) == 1 and axes in ([-1], [1])


def _symmetric_scale(values: np.ndarray) -> np.float32:
    return np.float32(max(float(np.abs(values).max()) if values.size else 0.0, 1e-12) / 127.0)


def _to_int8(values: np.ndarray, scale: np.float32) -> np.ndarray:
    return np.clip(np.rint(values / scale), -127, 127).astype(np.int8)


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

