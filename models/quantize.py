"""Smaller variants of an exported fp32 model and the accuracy gate they must pass.

- ``int8``: INT8 embedding tables, weight-only. The file stores them int8 and the graph
  rebuilds each fp32 table from constants alone (``Cast``, and a ``Mul`` by per-column
  scales), which onnxruntime folds once when a session loads: every call then gathers
  fp32 rows with no per-call conversion, so the variant is smaller on disk and in
  transfer, not in a session's memory, and runs fp32's kernels. For the plain ranker's
  serving graph the vector tables' scales are folded into the layers that consume the
  rows (:func:`fold_ranker_tables`), which leaves four ops fewer per call than fp32.
  The MLP stays fp32 (quantizing its MatMuls dynamically cost +0.15 RMSE on synthetic
  data). For CPU.
- ``int8_static``: static QDQ INT8 with activation ranges calibrated on training rows.
- ``fp16``: all float weights and ops in half precision, inputs/outputs kept fp32, for GPU.

Why no per-call dequantize: a Gather of int8 rows followed by a DequantizeLinear (or
a Cast) converts every gathered row on every call. For the ranker+recent model that
is the batch's recent-item rows (rows x 20 x 32 values): at 1,000 rows the conversion
cost more than the smaller Gather saved: INT8 ran 9-17% slower than fp32 at 100 and
1,000 rows. Folding that graph's tables too (its implicit term widened per user list
to meet the folded user rows) still ran 1-3% slower than fp32 on MovieLens rows, so
the ranker+recent graph keeps fp32's ops and only its tables change.

Sensitive nodes stay fp32 in the INT8 variants: the first MLP layer (an early
probe: quantizing it cost +0.048 RMSE) and, outside the folded ranker graph, the
one-column bias tables (tiny, and their quantization error lands directly on the
prediction; the fold gives each bias its own scale, centred on its range).
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
    """Weight-only INT8 of the embedding tables, rebuilt as fp32 when a session loads:
    the plain ranker's graph through :func:`fold_ranker_tables`, any other graph (the
    ranker+recent one included) through :func:`quantize_gathers`. The MLP stays fp32
    (onnxruntime's ``quantize_dynamic`` would also rewrite each Gemm as MatMul + Add:
    slower kernels)."""
    model = onnx.load(str(fp32))
    if not fold_ranker_tables(model):
        quantize_gathers(model, set(sensitive_nodes(model)))
    onnx.save(model, str(out))
    return out


def quantize_gathers(model: onnx.ModelProto, excluded: set[str]) -> int:
    """Store each 2-D float table ``W`` that only row-Gathers outside ``excluded`` read
    as int8 with one symmetric scale per column (max |W[:, j]| / 127), and rebuild ``W``
    under its own name as ``Cast(int8) * scale``: constants only, so onnxruntime folds
    them when a session loads (under any session options, where a DequantizeLinear on
    an initializer stays a per-call op unless ``session.disable_quant_qdq`` is set) and
    the Gathers read fp32 rows as before. In place; returns the tables quantized."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    tables = [
        init for init in model.graph.initializer
        if len(init.dims) == 2 and init.data_type == onnx.TensorProto.FLOAT and readers.get(init.name)
        and all(n.op_type == "Gather" and n.name not in excluded and _axis(n) == 0 and list(n.input).index(init.name) == 0 for n in readers[init.name])
    ]
    rebuilt = [node for table in tables for node in _int8_table(table.name)]
    chosen = {t.name for t in tables}
    kept = [i for i in model.graph.initializer if i.name not in chosen]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + [init for table in tables for init in _int8_initializers(table)])
    nodes = rebuilt + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(tables)


def _int8_initializers(table: onnx.TensorProto) -> list[onnx.TensorProto]:
    weights = numpy_helper.to_array(table).astype(np.float32)
    scales = np.array([_symmetric_scale(column) for column in weights.T], np.float32)
    return [numpy_helper.from_array(_to_int8(weights, scales), f"{table.name}_quantized"), numpy_helper.from_array(scales, f"{table.name}_scale")]


def _int8_table(name: str) -> list[onnx.NodeProto]:
    """The nodes rebuilding table ``name`` from the initializers of :func:`_int8_initializers`."""
    return [
        onnx.helper.make_node("Cast", [f"{name}_quantized"], [f"{name}_cast"], name=f"{name}_cast", to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Mul", [f"{name}_cast", f"{name}_scale"], [name], name=f"{name}_dequantize"),
    ]


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


@dataclass(frozen=True)
class _RankerTail:
    """Where the serving ranker's graph uses its tables: Gathers of the two vector
    tables (the Mul's inputs, in order) and of the two bias tables (same order),
    ``ReduceSum(Mul) + (bias + bias)``, and the first-layer Gemms reading the vectors."""

    mul: onnx.NodeProto
    vectors: tuple[onnx.NodeProto, onnx.NodeProto]
    biases: tuple[onnx.NodeProto, onnx.NodeProto]
    reduce: onnx.NodeProto
    adds: tuple[onnx.NodeProto, onnx.NodeProto]
    first_layer: tuple[onnx.NodeProto, ...]


def fold_ranker_tables(model: onnx.ModelProto) -> bool:
    """INT8 tables for the plain ranker's serving graph, rebuilt as fp32 at session load
    with no dequantize op; in place, False (graph untouched) when the graph lacks the
    pattern of :class:`_RankerTail` (the ranker+recent graph adds a term to the gathered
    user rows: it does not match).

    Each vector table becomes int8 (symmetric, per tensor) with two more columns: its
    own bias (int8 around the bias range's centre, its own scale) and a column of 1s
    that multiplies the other table's bias in the dot product. The graph Casts the
    whole table to float (constant: onnxruntime folds it at load), so rows are read in
    int8 units; the scales go where the rows are consumed: into the first-layer
    weights (scaled, zero rows for the bias columns) and into one Gemm replacing
    ``ReduceSum(u * i) + b_u + b_i`` by ``(u * i) @ w + c`` (w: the product of the
    vector scales, then the two bias scales; c: the bias centres). A call thus runs
    four ops fewer (two bias Gathers, ReduceSum, two Adds, less the Gemm) than fp32:
    at ~100 rows a call costs mostly per-op overhead. A bias is off by at most half its
    scale (range / 508); it lands on the score directly, but its error is small next
    to the vectors' (the accuracy gate measures both)."""
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
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in added.items())
    _rewire_tail(model, tail, prefix)
    return True


def _rewire_tail(model: onnx.ModelProto, tail: _RankerTail, prefix: str) -> None:
    dropped = {id(n) for n in (*tail.biases, *tail.adds)}
    nodes = [_cast_table(g.input[0]) for g in tail.vectors]
    for node in model.graph.node:
        if id(node) in dropped:
            continue
        if any(node is v for v in tail.vectors):
            nodes.append(onnx.helper.make_node("Gather", [f"{node.input[0]}_int8_rows", node.input[1]], list(node.output), name=node.name))
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


def _cast_table(table: str) -> onnx.NodeProto:
    """``{table}_quantized`` (int8) as float, in int8 units: a constant, folded at load."""
    return onnx.helper.make_node("Cast", [f"{table}_quantized"], [f"{table}_int8_rows"], name=f"{table}_cast", to=onnx.TensorProto.FLOAT)


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

    def sole(self, name: str, op: str) -> onnx.NodeProto | None:
        """The only consumer of ``name``, if it is an ``op``."""
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None


def _tail_at(index: _GraphIndex, mul: onnx.NodeProto) -> _RankerTail | None:
    u, i = (index.gather(name, bias=False) for name in mul.input)
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
    if len(biases) != 2 or set(by_index) != {u.input[1], i.input[1]} or not all(_plain_gemm(n, index.tables) for n in first):
        return None
    return _RankerTail(mul, (u, i), (by_index[u.input[1]], by_index[i.input[1]]), reduce, (pair, total), first)


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


def _to_int8(values: np.ndarray, scale: np.float32 | np.ndarray) -> np.ndarray:
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

