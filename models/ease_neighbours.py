"""Offline item-item neighbours from EASE, served as a candidate source (``ease``,
models/candidates.py).

EASE (Steck's embarrassingly shallow autoencoder, models/topn.py) fits every item's
weight towards every other over the whole training matrix: ``B = I − P · diag(1 / diag(P))``
with ``P = (XᵀX + λI)⁻¹``, and a user's score for ``j`` is ``Σ_r X[u, r] · B[r, j]``.
Row ``r``'s largest weights are the items that recommend themselves from ``r``; the
worker expands them from the user's recent items exactly as it expands co-visitation
neighbours (``covisit_items``), so only each item's ``neighbours`` best are kept.

The table is attached to a model version (``ease_neighbours.npz``, sha256-checked at
load, :meth:`~streamrec.models.registry.ModelRegistry.attach`), trained on the same
events as the version's ranker. Items that arrive after training have no row: the
source proposes nothing from them (co-visitation, learnt online, still does). The
inverse is dense: ``items²`` float64, so a catalogue above ``max_items`` gets no table.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from streamrec.models.candidates import NeighbourLists

log = logging.getLogger(__name__)

EASE_NEIGHBOURS = "ease_neighbours"  # the attachment's name in a registry version
DEFAULT_L2 = 500.0  # the top-N table's λ (README: recommendation quality)
DEFAULT_NEIGHBOURS = 100
DEFAULT_MAX_ITEMS = 20_000  # 3.2 GB of float64 for the inverse


@dataclass(frozen=True)
class NeighbourTable:
    """Each item's ``neighbours`` best EASE weights: ``items`` [n] (str), ``index`` [n, K]
    rows into ``items`` best first, ``weight`` [n, K] float32."""

    items: np.ndarray
    index: np.ndarray
    weight: np.ndarray

    def lists(self) -> NeighbourLists:
        """As the candidate code reads neighbours: item → (neighbour ids, weights), best first."""
        ids = self.items.tolist()
        return {item: ([ids[j] for j in row], list(w)) for item, row, w in zip(ids, self.index.tolist(), self.weight.tolist())}

    def save(self, path: Path) -> None:
        np.savez(path, items=self.items, index=self.index, weight=self.weight)

    @classmethod
    def load(cls, path: Path) -> NeighbourTable:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["items"], data["index"], data["weight"])


def fit_ease_neighbours(train: pd.DataFrame, l2: float = DEFAULT_L2, neighbours: int = DEFAULT_NEIGHBOURS) -> NeighbourTable:
    """EASE on the binary user × item matrix of ``train`` (``user_id``, ``item_id``), each
    item's ``neighbours`` largest weights. Blocking: O(items³) time, items² memory."""
    from streamrec.models.topn import EASE

    model = EASE(l2)
    model.fit(train)
    weights = model.weights
    k = min(neighbours, max(len(weights) - 1, 0))
    top = np.argpartition(-weights, k, axis=1)[:, :k] if k < len(weights) else np.tile(np.arange(len(weights)), (len(weights), 1))
    picked = np.take_along_axis(weights, top, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    index, weight = np.take_along_axis(top, order, axis=1), np.take_along_axis(picked, order, axis=1)
    items = np.asarray([str(i) for i in model.item_ids], dtype=str)
    return NeighbourTable(items, index.astype(np.int32), weight.astype(np.float32))


def attach_ease_neighbours(registry: Any, version: str, train: pd.DataFrame, l2: float = DEFAULT_L2,
                           neighbours: int = DEFAULT_NEIGHBOURS, max_items: int = DEFAULT_MAX_ITEMS) -> bool:
    """Fit the table on ``train`` (the events ``version``'s ranker learnt) and attach it to
    ``version``; attach before promoting. False (nothing attached) above ``max_items``."""
    catalogue = train["item_id"].nunique()
    if catalogue > max_items:
        log.warning("EASE neighbours skipped: %d items > %d (the inverse is items² float64)", catalogue, max_items)
        return False
    table = fit_ease_neighbours(train, l2, neighbours)
    with tempfile.TemporaryDirectory(prefix="streamrec-ease-") as tmp:
        path = Path(tmp) / f"{EASE_NEIGHBOURS}.npz"
        table.save(path)
        registry.attach(version, EASE_NEIGHBOURS, path, {"l2": l2, "neighbours": neighbours, "items": len(table.items),
                                                          "train_rows": len(train)})
    return True


def open_ease_neighbours(registry: Any, version: str) -> NeighbourLists | None:
    """The table attached to ``version`` as neighbour lists (sha256 verified), or ``None``
    when it has none. Raises the registry's ``ArtifactError`` for a bad file."""
    if EASE_NEIGHBOURS not in registry.metadata(version):
        return None
    return NeighbourTable.load(registry.verified_attachment(version, EASE_NEIGHBOURS)).lists()

