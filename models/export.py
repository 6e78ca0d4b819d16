"""ONNX export of a trained net: one self-contained file, dynamic batch, parity checked.

The graph has inputs ``user`` int64[N], ``item`` int64[N], ``dense`` float32[N, F]
(and ``recent`` int64[U, K] with ``recent_row`` int64[N] for a model that reads the
users' recent items, models/recent_ranker.py) and output ``score`` float32[N]. Every export is compared with PyTorch eager on the given
rows; a max abs difference above ``PARITY_TOLERANCE`` raises :class:`ExportError` and
leaves no file behind.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamrec.models.encoding import Inputs
from streamrec.models.training import predict

PARITY_TOLERANCE = 1e-5
INPUT_NAMES = ("user", "item", "dense", "recent", "recent_row")
OUTPUT_NAME = "score"


class ExportError(RuntimeError):
    """The exported graph disagrees with PyTorch, or the export itself failed."""


def onnx_inputs(batch: Inputs) -> dict[str, np.ndarray]:
    return dict(zip(INPUT_NAMES, batch.graph_inputs()))


def run_onnx(path: Path | bytes, batch: Inputs, chunk: int = 65536) -> np.ndarray:
    """Score with a fresh CPU session on a file or a serialized graph (offline checks;
    serving uses streamrec.models.scorer)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=["CPUExecutionProvider"])
    parts = [
        session.run([OUTPUT_NAME], onnx_inputs(batch.take(np.arange(s, min(s + chunk, len(batch))))))[0]
        for s in range(0, len(batch), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _drop_value_info(path: Path) -> None:
    # The dynamo exporter records intermediate shapes from the example batch, which
    # later clash with shape inference (quantization tools); inputs/outputs keep theirs.
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))


def export_onnx(net: nn.Module, path: Path, check: Inputs) -> float:
    """Write ``net`` to ``path`` and return the max abs difference from eager on ``check``.

    A net with a ``for_export()`` (the ranker) is written in that form, fewer graph
    operations for the same function; parity is still against ``net`` itself.
    """
    net.eval()
    for_export = getattr(net, "for_export", None)
    graph = for_export() if callable(for_export) else net
    example = check.take(np.arange(min(len(check), 64)))
    if len(example) < 2:
        raise ExportError("need at least 2 rows to export a dynamic batch axis")
    args = tuple(torch.as_tensor(a) for a in example.graph_inputs())
    batch, lists = torch.export.Dim("batch", min=1), torch.export.Dim("lists", min=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                graph,
                args,
                input_names=list(INPUT_NAMES[: len(args)]),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=tuple({0: lists if name == "recent" else batch} for name, _ in zip(INPUT_NAMES, args)),
                dynamo=True,
                verbose=False,
            )
            if program is None:  # only a TorchScript export returns none
                raise RuntimeError("torch.onnx.export with dynamo=True returned no ONNX program")
            program.save(str(path), external_data=False)
        _drop_value_info(path)
    except Exception as exc:
        path.unlink(missing_ok=True)
        raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    diff = float(np.max(np.abs(run_onnx(path, check) - predict(net, check)))) if len(check) else 0.0
    if not diff <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX parity {diff:.3g} > {PARITY_TOLERANCE:g}")
    return diff
