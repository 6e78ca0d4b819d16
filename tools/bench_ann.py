"""Exact numpy top-k against an HNSW index (usearch) for embedding neighbours.

For each catalogue size: seeded synthetic unit vectors (a Gaussian mixture, so that
neighbourhoods exist as in a trained embedding), queries shaped like the recommend
step's (the mean of a few catalogue vectors), one query per call as the worker
issued them one by one, and 32 at a time as the batched recommend step does.
Measures build time, latency p50/p99 of both, and HNSW recall@k against the
exact answer. Prints a table, writes JSON and a plot.

    python -m streamrec.tools.bench_ann --sizes 10000 100000 1000000 --json var/bench/ann.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streamrec.models.item_vectors import ExactIndex, HnswIndex, ItemVectors, VectorIndex


def synthetic_vectors(n: int, dim: int, seed: int = 0, clusters: int = 256) -> ItemVectors:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (clusters, dim)).astype(np.float32)
    points = centres[rng.integers(0, clusters, n)] + rng.normal(0, 0.6, (n, dim)).astype(np.float32)
    return ItemVectors.normalised([str(i) for i in range(n)], points)


def queries(vectors: ItemVectors, count: int, per_query: int = 5, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(vectors.ids), (count, per_query))
    means = vectors.matrix[rows].mean(axis=1)
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def _latencies(index: VectorIndex, qs: np.ndarray, k: int) -> tuple[list[float], list[float], list[list[int]]]:
    """Wall and CPU (process) ms per single query, and the rows found."""
    wall, cpu, found = [], [], []
    for q in qs:
        began, began_cpu = time.perf_counter(), time.process_time()
        rows = index.search(q, k)
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
        found.append([r for r, _ in rows])
    return wall, cpu, found


def _batched(index: VectorIndex, qs: np.ndarray, k: int, batch: int) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for start in range(0, len(qs) - batch + 1, batch):
        began, began_cpu = time.perf_counter(), time.process_time()
        index.search_many(qs[start : start + batch], k)
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    return wall, cpu


def measure(n: int, dim: int, k: int, n_queries: int, connectivity: int, expansion_search: int, batch: int = 32) -> dict[str, Any]:
    vectors = synthetic_vectors(n, dim)
    qs = queries(vectors, n_queries)
    exact = ExactIndex(vectors.matrix)
    began = time.perf_counter()
    hnsw = HnswIndex(vectors.matrix, connectivity, expansion_search)
    build_s = time.perf_counter() - began
    _latencies(exact, qs[:10], k), _latencies(hnsw, qs[:10], k)  # warm up
    exact_ms, exact_cpu, truth = _latencies(exact, qs, k)
    hnsw_ms, hnsw_cpu, approx = _latencies(hnsw, qs, k)
    recall = float(np.mean([len(set(t) & set(a)) / k for t, a in zip(truth, approx)]))
    (exact_batch, exact_batch_cpu), (hnsw_batch, hnsw_batch_cpu) = _batched(exact, qs, k, batch), _batched(hnsw, qs, k, batch)
    median = lambda values: float(np.median(values))  # noqa: E731
    return {
        "items": n, "dim": dim, "k": k, "queries": n_queries, "batch": batch,
        "exact_p50_ms": median(exact_ms), "exact_p99_ms": float(np.percentile(exact_ms, 99)),
        "hnsw_p50_ms": median(hnsw_ms), "hnsw_p99_ms": float(np.percentile(hnsw_ms, 99)),
        "exact_cpu_p50_ms": median(exact_cpu), "hnsw_cpu_p50_ms": median(hnsw_cpu),
        "exact_batch_p50_ms": median(exact_batch), "hnsw_batch_p50_ms": median(hnsw_batch),
        "exact_batch_cpu_p50_ms": median(exact_batch_cpu), "hnsw_batch_cpu_p50_ms": median(hnsw_batch_cpu),
        "hnsw_build_s": build_s, "hnsw_recall_at_k": recall,
        "hnsw_connectivity": connectivity, "hnsw_expansion_search": expansion_search,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["items"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("exact", "exact numpy"), ("hnsw", "usearch HNSW")):
        ax.plot(sizes, [r[f"{key}_p50_ms"] for r in rows], marker="o", label=f"{label} p50")
        ax.plot(sizes, [r[f"{key}_p99_ms"] for r in rows], marker="x", linestyle="--", label=f"{label} p99")
    ax.set(xscale="log", yscale="log", xlabel="catalogue size (items)", ylabel="ms per query",
           title=f"top-{rows[0]['k']} embedding neighbours, d={rows[0]['dim']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--connectivity", type=int, default=16)
    parser.add_argument("--expansion-search", type=int, default=128)
    parser.add_argument("--json", type=Path, default=Path("var/bench/ann.json"))
    args = parser.parse_args(argv)
    rows = []
    for n in tqdm(args.sizes, desc="catalogue sizes"):
        rows.append(measure(n, args.dim, args.k, args.queries, args.connectivity, args.expansion_search))
        row = rows[-1]
        tqdm.write(f"{n:>9} items | one query: exact p50 {row['exact_p50_ms']:.3f} ms (cpu {row['exact_cpu_p50_ms']:.3f}) "
                   f"p99 {row['exact_p99_ms']:.3f} | hnsw p50 {row['hnsw_p50_ms']:.3f} ms (cpu {row['hnsw_cpu_p50_ms']:.3f}) "
                   f"p99 {row['hnsw_p99_ms']:.3f} | recall@{args.k} {row['hnsw_recall_at_k']:.3f} build {row['hnsw_build_s']:.1f} s | "
                   f"{row['batch']} per call: exact {row['exact_batch_p50_ms']:.2f} ms (cpu {row['exact_batch_cpu_p50_ms']:.2f}), "
                   f"hnsw {row['hnsw_batch_p50_ms']:.2f} ms (cpu {row['hnsw_batch_cpu_p50_ms']:.2f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    args.json.write_text(json.dumps({"results": rows, "load_average_1m": load, "cpus": os.cpu_count()}, indent=1))
    plot(rows, args.json.with_suffix(".png"))
    print(f"wrote {args.json} and {args.json.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
