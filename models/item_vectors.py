"""Item vectors from the ranker's artifact, and nearest-neighbour search over them.

The ranker's item embeddings (``mf.item_vec``, the vectors of its p_u·q_i term) are
stored in the fp32 ONNX file of every artifact as the initializer
:data:`ITEM_VECTORS_INITIALIZER`; row 0 is the reserved cold-start index, row ``i``
the item ``metadata["items"][i - 1]``. :func:`load_item_vectors` reads them through
the registry (sha256 verified), with onnx only (no torch). An artifact without that
initializer (seed model, another architecture) has no vectors: the embedding source
is then skipped.

Search is by cosine similarity (vectors are L2-normalised at load). Two indexes behind
one protocol: :class:`ExactIndex` (numpy, one matrix-vector product + partition) and
:class:`HnswIndex` (usearch HNSW, approximate). :func:`build_index` picks by catalogue
size (``CandidateConfig.exact_search_max_items``); ``tools/bench_ann.py`` measured
where the crossover is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamrec.features.messages import ItemId
from streamrec.models.candidates import EMPTY, CandidateConfig, ScoredItems

ITEM_VECTORS_INITIALIZER = "mf.item_vec.weight"
# the same table's name in each exported graph: the training net's, then the serving graph's
# (``streamrec.models.nets.ServingRanker``)
ITEM_VECTORS_INITIALIZERS = (ITEM_VECTORS_INITIALIZER, "item_vec")


@dataclass(frozen=True)
class ItemVectors:
    """Unit-length float32 vectors, row ``r`` for ``ids[r]``."""

    ids: list[ItemId]
    matrix: np.ndarray
    index_of: dict[ItemId, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or len(self.ids) != len(self.matrix):
            raise ValueError(f"{len(self.ids)} ids for a matrix of shape {self.matrix.shape}")
        object.__setattr__(self, "index_of", {item: row for row, item in enumerate(self.ids)})

    @classmethod
    def normalised(cls, ids: Sequence[ItemId], vectors: np.ndarray) -> ItemVectors:
        matrix = np.asarray(vectors, np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return cls(list(ids), np.ascontiguousarray(matrix / np.maximum(norms, 1e-12)))

    def query(self, recent: Sequence[tuple[ItemId, float]]) -> np.ndarray | None:
        """The affinity-weighted mean of the known recent items' vectors, unit length;
        ``None`` when no recent item has a vector (or every weight is 0)."""
        rows = [(self.index_of[item], max(weight, 0.0)) for item, weight in recent if item in self.index_of]
        weights = np.array([w for _, w in rows], np.float32)
        if not rows or weights.sum() <= 0:
            return None
        mean = weights @ self.matrix[[r for r, _ in rows]]
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else None


def load_item_vectors(registry: Any, version: str) -> ItemVectors | None:
    """The artifact's item vectors (``None`` when it has none). Blocking; reads the
    verified fp32 file. Raises the registry's ``ArtifactError`` on a bad file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(registry.verified_path(version, "fp32")), load_external_data=False)
    tables = {t.name: t for t in model.graph.initializer if t.name in ITEM_VECTORS_INITIALIZERS}
    table = next((tables[name] for name in ITEM_VECTORS_INITIALIZERS if name in tables), None)
    items = registry.metadata(version).get("items", [])
    if table is None or not items:
        return None
    vectors = numpy_helper.to_array(table)
    if vectors.shape[0] != len(items) + 1:
        raise ValueError(f"{table.name} has {vectors.shape[0]} rows for {len(items)} items (+1 unknown)")
    return ItemVectors.normalised([str(i) for i in items], vectors[1:])


class VectorIndex(Protocol):
    kind: str

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` (row, cosine similarity) pairs for one unit query, best first. Blocking."""
        ...

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each row of ``queries`` [q, d], in one call."""
        ...


class ExactIndex:
    """Exact cosine top-k: O(n·d) per query."""

    kind = "exact"

    def __init__(self, matrix: np.ndarray) -> None:
        self._matrix = matrix

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self.search_many(query[None, :], k)[0]

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        sims = queries.astype(np.float32, copy=False) @ self._matrix.T  # one BLAS call for the batch
        n = sims.shape[1]
        k = min(k, n)
        if k <= 0:
            return [[] for _ in range(len(queries))]
        top = np.argpartition(sims, n - k, axis=1)[:, n - k :] if k < n else np.tile(np.arange(n), (len(sims), 1))
        query = np.arange(len(top))[:, None]  # plain fancy indexing: take_along_axis costs more per call
        picked = sims[query, top]
        order = np.argsort(-picked, axis=1, kind="stable")  # each row on its own, as one call
        rows, found = top[query, order].tolist(), picked[query, order].tolist()
        return [list(zip(r, f)) for r, f in zip(rows, found)]


class HnswIndex:
    """Approximate cosine top-k with usearch's HNSW (inner product on unit vectors)."""

    kind = "hnsw"

    def __init__(self, matrix: np.ndarray, connectivity: int = 16, expansion_search: int = 128, build_threads: int = 0) -> None:
        from usearch.index import Index

        self._index = Index(ndim=matrix.shape[1], metric="ip", dtype="f32", connectivity=connectivity,
                            expansion_search=expansion_search)
        self._index.add(np.arange(len(matrix), dtype=np.uint64), matrix, threads=build_threads)

    def search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        return self.search_many(query[None, :], k)[0]

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        queries = queries.astype(np.float32, copy=False)
        # usearch's "ip" distance is 1 - dot; one query gives Matches, several BatchMatches
        if len(queries) == 1:
            one = self._index.search(queries[0], k)
            return [list(zip(one.keys.tolist(), (1.0 - one.distances).tolist()))]
        found: Any = self._index.search(queries, k, threads=1)  # BatchMatches; the worker's cores belong to the event loop
        return [list(zip(found.keys[q, :c].tolist(), (1.0 - found.distances[q, :c]).tolist())) for q, c in enumerate(found.counts.tolist())]


def build_index(vectors: ItemVectors, cfg: CandidateConfig) -> VectorIndex:
    """Exact search up to ``cfg.exact_search_max_items`` items, HNSW above. Blocking."""
    if len(vectors.ids) <= cfg.exact_search_max_items:
        return ExactIndex(vectors.matrix)
    return HnswIndex(vectors.matrix, cfg.ann_connectivity, cfg.ann_expansion_search)


def embedding_neighbours(
    vectors: ItemVectors, index: VectorIndex, recents: Sequence[Sequence[tuple[ItemId, float]]], k: int
) -> list[ScoredItems]:
    """For each user's recent items, the items nearest to them (cosine similarity as the
    score), best first, in one search call (the recent items themselves may appear: the
    merge excludes them). Empty for a user none of whose recent items has a vector."""
    queries = [vectors.query(recent) if k > 0 else None for recent in recents]
    asked = [q for q in queries if q is not None]
    if not asked:
        return [EMPTY for _ in recents]
    depth = k + max(len(recent) for recent in recents)
    found = iter(index.search_many(np.stack(asked), depth))
    ids = vectors.ids
    out = []
    for q in queries:
        if q is None:
            out.append(EMPTY)
            continue
        pairs = next(found)
        out.append(ScoredItems.from_columns([ids[row] for row, _ in pairs], [sim for _, sim in pairs]))
    return out
