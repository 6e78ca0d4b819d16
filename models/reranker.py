"""The second-stage re-ranker: orders one request's candidate list by what is known of
each candidate at serving time.

The ranker (models/scorer.py) learns which items a user picks against uniformly sampled
negatives; the re-ranker learns to order the candidate lists themselves (trained on the
lists the worker's code held before each training event, models/rerank_training.py).
Its inputs per candidate, all available online (:func:`list_inputs`):

- the ranker's score, standardised within the list, its gap to the list's best, and
  the log of its rank in the list;
- the log of the candidate's merge position and its source (covisit / embedding /
  popular, one-hot);
- the source's own score: the log co-visit weight and its share of the list's largest,
  the embedding similarity, the popular score ``1 / (1 + popularity rank)``;
- with ``ease`` (a re-ranker trained on lists holding the EASE source): whether EASE
  proposed the candidate, the log of its EASE score and its share of the list's largest
  (:data:`EASE_INPUTS`, after :data:`LIST_INPUTS`; a re-ranker without them was trained
  on lists without that source, and the serving bundle then leaves the source out);
- context columns read from the online store with the ranker's (``CONTEXT``: the user's
  and the item's event counts, log1p, and the item's rating mean; a missing value is 0).

The graph is one ONNX file beside the ranker's in its registry version
(:meth:`~streamrec.models.registry.ModelRegistry.attach`, sha256-verified at load): input
``inputs`` float32 [N, F], output ``score`` float32 [N], higher first. A re-ranker is tied
to the ranker version whose scores it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from streamrec.models.candidates import CandidateSource, Candidates, top_k
from streamrec.models.features import is_count
from streamrec.models.scorer import session_options

RERANKER = "reranker"  # its name in a registry version's metadata
INPUT_NAME, OUTPUT_NAME = "inputs", "score"
ONE_HOT: tuple[CandidateSource, ...] = ("covisit", "embedding", "popular")
LIST_INPUTS: tuple[str, ...] = (
    "score_z", "score_gap", "log_model_rank", "log_position", *(f"is_{source}" for source in ONE_HOT),
    "log_covisit_weight", "covisit_share", "embedding_similarity", "popular_score",
)
EASE_INPUTS: tuple[str, ...] = ("is_ease", "log_ease_weight", "ease_share")
CONTEXT: tuple[str, ...] = ("user_features:event_count", "item_features:event_count", "item_features:rating_mean")


def input_names(context: Sequence[str] = CONTEXT, ease: bool = False) -> tuple[str, ...]:
    """The re-ranker's input columns, in order: :data:`LIST_INPUTS`, :data:`EASE_INPUTS`
    with ``ease``, then ``context``."""
    return (*LIST_INPUTS, *(EASE_INPUTS if ease else ()), *context)


def list_inputs(scores: np.ndarray, cands: Candidates, context: np.ndarray, context_names: Sequence[str] = CONTEXT,
                ease: bool = False) -> np.ndarray:
    """float32 [n, F] (F = ``len(input_names(context_names, ease))``) for one request's ``cands``
    in merge order: ``scores`` the ranker's [n], ``context`` [n, C] the online values of
    ``context_names`` (NaN where missing). Pure; the same for training and serving.
    Raises ``ValueError`` for an ``ease`` candidate without ``ease``."""
    n = len(cands)
    first_context = len(input_names((), ease))
    out = np.zeros((n, first_context + len(context_names)), np.float32)
    if n == 0:
        return out
    score = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    out[:, 0] = (score - score.mean()) / (score.std() + 1e-6)
    out[:, 1] = score - score.max()
    rank = np.empty(n, np.float64)
    rank[top_k(score, n)] = np.arange(n)
    out[:, 2] = np.log1p(rank)
    out[:, 3] = np.log1p(np.arange(n))
    source_score = np.asarray(cands.scores, np.float64)
    begin = 0
    for source, count in cands.blocks:
        part = slice(begin, begin + count)
        if source == "ease":
            if not ease:
                raise ValueError("an ease candidate for a re-ranker without the ease inputs")
            weight = np.maximum(source_score[part], 0.0)
            out[part, len(LIST_INPUTS)] = 1.0
            out[part, len(LIST_INPUTS) + 1] = np.log1p(weight)
            out[part, len(LIST_INPUTS) + 2] = weight / max(float(weight.max(initial=0.0)), 1e-12)
            begin += count
            continue
        out[part, 4 + ONE_HOT.index(source)] = 1.0
        if source == "covisit" and count:
            weight = np.maximum(source_score[part], 0.0)
            out[part, 7] = np.log1p(weight)
            out[part, 8] = weight / max(float(weight.max()), 1e-12)
        elif source == "embedding":
            out[part, 9] = source_score[part]
        else:
            out[part, 10] = source_score[part]
        begin += count
    for col, name in enumerate(context_names):
        values = np.asarray(context[:, col], np.float64)
        if is_count(name):
            values = np.log1p(np.maximum(values, 0.0))
        out[:, first_context + col] = np.nan_to_num(values, nan=0.0)
    return out


class Reranker:
    """One CPU onnxruntime session over a re-ranker graph. ``score`` is blocking and
    thread-safe; ``feature_names`` are the online context columns it reads; ``ease``
    whether it was trained on lists holding the EASE source (and reads its inputs)."""

    def __init__(self, path: str, info: dict[str, Any], intra_op_threads: int = 1) -> None:
        self.feature_names: tuple[str, ...] = tuple(info["context"])
        self.ease = EASE_INPUTS[0] in info.get("inputs", [])  # trained on lists holding the ease source
        self.inputs = len(input_names(self.feature_names, self.ease))
        if list(info.get("inputs", [])) != list(input_names(self.feature_names, self.ease)):
            raise ValueError(f"re-ranker inputs {info.get('inputs')} are not this code's {input_names(self.feature_names, self.ease)}")
        self._session = ort.InferenceSession(path, session_options("fp32", intra_op_threads), providers=["CPUExecutionProvider"])

    def score(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [N] for ``inputs`` [N, F] (rows of :func:`list_inputs`); higher first."""
        if not len(inputs):
            return np.zeros(0, np.float32)
        if inputs.ndim != 2 or inputs.shape[1] != self.inputs:
            raise ValueError(f"re-ranker inputs have shape {inputs.shape}, expected (N, {self.inputs})")
        return self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(inputs, np.float32)})[0]


def open_reranker(registry: Any, version: str, intra_op_threads: int = 1) -> Reranker | None:
    """The re-ranker attached to ``version`` (sha256 verified), or ``None`` when it has none.
    Raises :class:`~streamrec.models.registry.ArtifactError` for a bad file."""
    info = registry.metadata(version).get(RERANKER)
    if info is None:
        return None
    return Reranker(str(registry.verified_attachment(version, RERANKER)), info, intra_op_threads)
