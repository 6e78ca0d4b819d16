"""Serving: one onnxruntime session per process, scoring batches of candidates.

The provider is chosen once, at construction: CUDA when onnxruntime offers it (the
``onnxruntime-gpu`` wheel on a machine with a GPU), else CPU. The variant follows the
provider (``int8`` on CPU, ``fp16`` on CUDA, each only if it passed its accuracy gate;
``fp32`` otherwise). ``providers`` reports what the session actually uses, which can
differ from what was asked (onnxruntime-gpu without CUDA falls back to CPU).
Works with either ``onnxruntime`` or ``onnxruntime-gpu`` installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from streamrec.models.config import Provider, Variant
from streamrec.models.encoding import UNKNOWN_INDEX

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
FeatureMap = Mapping[str, float | None]  # "<view>:<feature>" → value; not features.schema.FeatureRow


@dataclass(frozen=True)
class ScoreBatch:
    """Candidates to score: row r is (user_ids[r], item_ids[r], dense[r]); a single
    string ``user_ids`` means that one user for every row (the usual candidate list).

    ``dense`` is float32 [N, F] in the model's feature order (``Scorer.feature_names``)
    holding the online feature values as stored; NaN where a value is missing (a
    new user or item): the graph fills it. Unknown ids score through the reserved
    cold-start index. ``recent`` holds each user's recent item ids, newest first (the
    user state's ``recent``), for a model that reads them (``Scorer.recent_items`` > 0):
    a user missing from it, like an unknown item in it, contributes nothing.
    """

    user_ids: Sequence[str] | str
    item_ids: Sequence[str]
    dense: np.ndarray
    recent: Mapping[str, Sequence[str]] | None = None

    def __post_init__(self) -> None:
        users = len(self.item_ids) if isinstance(self.user_ids, str) else len(self.user_ids)
        if not (users == len(self.item_ids) == len(self.dense)):
            raise ValueError(f"batch parts differ in length: {users}, {len(self.item_ids)}, {len(self.dense)}")

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def for_user(
        cls, user_id: str, item_ids: Sequence[str], user_features: FeatureMap, item_features: Sequence[FeatureMap], names: Sequence[str]
    ) -> ScoreBatch:
        """One user against many items, from feature rows keyed ``"<view>:<feature>"``."""
        dense = np.full((len(item_ids), len(names)), np.nan, np.float32)
        for col, name in enumerate(names):
            if name.startswith("user_features:"):
                value = user_features.get(name)
                dense[:, col] = np.nan if value is None else value
            else:
                dense[:, col] = [np.nan if (v := row.get(name)) is None else v for row in item_features]
        return cls(user_id, list(item_ids), dense)


class _IdIndex(dict[str, int]):
    """id → model index; an unknown id is the reserved cold-start index (no KeyError)."""

    def __missing__(self, key: str) -> int:
        return UNKNOWN_INDEX

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self.__getitem__, ids), np.int64, len(ids))


# The int8 variant's tables are rebuilt as fp32 when the session loads (constants,
# folded; models/quantize.py): there is nothing for onnxruntime's QDQ fusions to
# fuse, so they are skipped. Static QDQ does need them.
_SESSION_CONFIG: dict[str, dict[str, str]] = {"int8": {"session.disable_quant_qdq": "1"}}


def session_options(variant: str, intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options of a serving session for ``variant`` (also what the benchmark times)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in _SESSION_CONFIG.get(variant, {}).items():
        options.add_session_config_entry(key, value)
    return options


def choose_provider(requested: Provider = "auto") -> str:
    available = ort.get_available_providers()
    if requested == "cuda" and CUDA not in available:
        raise RuntimeError(f"provider cuda requested but onnxruntime offers only {available}")
    return CUDA if requested == "cuda" or (requested == "auto" and CUDA in available) else CPU


def choose_variant(metadata: Mapping[str, Any], provider: str, requested: Variant = "auto") -> str:
    """The requested variant, or the best accepted one for the provider."""
    variants = metadata["variants"]
    if requested != "auto":
        if requested not in variants:
            raise ValueError(f"variant {requested!r} not in this artifact ({sorted(variants)})")
        return requested
    preferred = ("fp16", "fp32") if provider == CUDA else ("int8", "fp32")
    return next(v for v in preferred if v in variants and variants[v].get("accepted", True))


class Scorer:
    """Scores candidate batches with one ONNX session. ``score`` is blocking and
    thread-safe (onnxruntime sessions allow concurrent ``run``)."""

    def __init__(
        self,
        path: Path,
        metadata: Mapping[str, Any],
        provider: str = CPU,
        variant: str = "fp32",
        intra_op_threads: int = 1,
    ) -> None:
        self.metadata, self.variant, self.version = metadata, variant, str(metadata.get("version", "unversioned"))
        self.feature_names: tuple[str, ...] = tuple(metadata["features"])
        self.recent_items = int(metadata.get("recent_items", 0))
        self._users = _IdIndex((u, i + 1) for i, u in enumerate(metadata["users"]))
        self._items = _IdIndex((it, i + 1) for i, it in enumerate(metadata["items"]))
        providers = [provider, CPU] if provider != CPU else [CPU]
        self._session = ort.InferenceSession(str(path), session_options(variant, intra_op_threads), providers=providers)
        self._outputs = ["score"]

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, in priority order."""
        return list(self._session.get_providers())

    def score(self, batch: ScoreBatch) -> np.ndarray:
        """float32 [N] scores (predicted rating, or a logit for implicit models)."""
        if not len(batch):
            return np.zeros(0, np.float32)
        if batch.dense.ndim != 2 or batch.dense.shape[1] != len(self.feature_names):
            raise ValueError(f"dense has shape {batch.dense.shape}, model expects (N, {len(self.feature_names)}): {self.feature_names}")
        if isinstance(batch.user_ids, str):
            user = np.full(len(batch), self._users[batch.user_ids], np.int64)
        else:
            user = self._users.indices(batch.user_ids)
        item = self._items.indices(batch.item_ids)
        dense = batch.dense if batch.dense.dtype == np.float32 and batch.dense.flags.c_contiguous else np.ascontiguousarray(batch.dense, np.float32)
        feed = {"user": user, "item": item, "dense": dense}
        if self.recent_items:
            feed["recent"], feed["recent_row"] = self._recent(batch)
        return self._session.run(self._outputs, feed)[0]

    def _recent(self, batch: ScoreBatch) -> tuple[np.ndarray, np.ndarray]:
        """int64 [U, recent_items], the batch's users' recent item indices (0-padded), and
        int64 [N], each row's user among them (the graph computes one term per user)."""
        recent = batch.recent or {}
        if isinstance(batch.user_ids, str):
            return self._recent_row(recent.get(batch.user_ids, ()))[None, :], np.zeros(len(batch), np.int64)
        users = list(dict.fromkeys(batch.user_ids))
        table = np.stack([self._recent_row(recent.get(user, ())) for user in users])
        position = dict(zip(users, range(len(users))))
        return table, np.fromiter(map(position.__getitem__, batch.user_ids), np.int64, len(batch))

    def _recent_row(self, items: Sequence[str]) -> np.ndarray:
        row = np.zeros(self.recent_items, np.int64)
        known = self._items.indices(list(items[: self.recent_items]))
        row[: len(known)] = known
        return row


def open_scorer(registry: Any, version: str, provider: Provider = "auto", variant: Variant = "auto", intra_op_threads: int = 1) -> Scorer:
    """Verify and load ``version`` from a :class:`~streamrec.models.registry.ModelRegistry`.

    When CUDA was chosen but the session runs on CPU only, reopen with the CPU variant."""
    metadata = registry.metadata(version)
    chosen = choose_provider(provider)
    name = choose_variant(metadata, chosen, variant)
    scorer = Scorer(registry.verified_path(version, name), metadata, chosen, name, intra_op_threads)
    if chosen == CUDA and CUDA not in scorer.providers and variant == "auto":
        name = choose_variant(metadata, CPU, variant)
        scorer = Scorer(registry.verified_path(version, name), metadata, CPU, name, intra_op_threads)
    return scorer
