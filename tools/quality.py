"""Recommendation quality of the lists people see: ``streamrec evaluate --protocol
prequential[:FRACTION]`` and ``--protocol topn``.

``prequential`` trains the serving ranker on the earliest ``1 - FRACTION`` of the
events (``models/pipeline.py``'s :func:`train_and_publish`, time holdout), then
replays the whole data set through the worker's code (``tools/prequential.py``)
and scores the last ``FRACTION`` event by event. ``topn`` is leave-last-out over the
full catalogue and 99 sampled negatives (``models/evaluation.py``) for popularity,
item-kNN, EASE, ALS, BPR (``models/topn.py``), the ranker alone, and the live
pipeline's lists (``tools/live_lists.py``): one table, the same split and seed.

Both need a Redis for the worker's store: a private ``redis-server`` started here
(stopped by PID at the end) unless ``--redis-url`` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.features.config import FeatureConfig
from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig
from streamrec.models.datasets import Dataset
from streamrec.models.rerank_training import RerankConfig
from streamrec.models.splits import Protocol

if TYPE_CHECKING:
    from streamrec.tools.prequential import ScoredEvents

DEFAULT_FRACTION = 0.2
DEFAULT_RERANK_EVENTS = 20_000  # training events whose held lists train the re-ranker


def objective_dataset(dataset: Dataset, objective: str) -> Dataset:
    """``dataset`` as the ranker should learn it: ``implicit`` drops the explicit flag
    (the ranker then learns which items a user picks, with sampled negatives)."""
    return dataset if objective == "explicit" or not dataset.explicit else dataclasses.replace(dataset, explicit=False)


@contextmanager
def redis_for(url: str | None) -> Iterator[str]:
    """``url``, or a private redis-server's for the duration."""
    if url:
        yield url
        return
    from streamrec.tools.bench_ranking import _private_redis

    process, private = _private_redis()
    try:
        yield private
    finally:
        process.terminate()
        process.wait()


@contextmanager
def serving_model(dataset: Dataset, models: ModelConfig, protocol: Protocol, objective: str,
                  registry: Path | None) -> Iterator[tuple[ModelConfig, dict[str, Any]]]:
    """A registry whose promoted version is ``models.ranker`` trained on the protocol's
    first split: ``registry``'s own when its promoted version was trained on the same
    data, split, objective, model and settings (the metadata says so), else trained
    now (into ``registry``, or a temporary one)."""
    from streamrec.models.pipeline import train_and_publish
    from streamrec.models.registry import ModelRegistry

    with tempfile.TemporaryDirectory(prefix="streamrec-quality-") as tmp:
        cfg = models.model_copy(update={"registry_dir": registry or Path(tmp)})
        data = objective_dataset(dataset, objective)
        kept = ModelRegistry(cfg.registry_dir)
        version = kept.current_version() if registry else None
        meta = kept.metadata(version) if version else {}
        wanted = {"model": models.ranker, "objective": "explicit" if data.explicit else "implicit",
                  "train_config": models.train.model_dump(mode="json")}
        trained_on = meta.get("data", {})
        same = (bool(version) and trained_on.get("dataset") == dataset.name and trained_on.get("rows") == len(dataset)
                and trained_on.get("protocol") == f"{protocol.kind}:{protocol.value:g}"
                and all(meta.get(key) == value for key, value in wanted.items()))
        if same:
            yield cfg, {"version": version, "metrics": meta.get("metrics", {}), "reused": True}
            return
        trained = train_and_publish(data, cfg, protocol, promote=True)
        yield cfg, {"version": trained.version, "metrics": trained.metrics, "reused": False}


def run_prequential(dataset: Dataset, models: ModelConfig, redis_url: str, *, fraction: float = DEFAULT_FRACTION,
                    objective: str = "implicit", features: FeatureConfig | None = None,
                    candidates: CandidateConfig | None = None, window_s: float = 1.0, progress: bool = True,
                    registry: Path | None = None, ranker_weights: Sequence[float] = (),
                    rerankers: Sequence[RerankConfig] = (), rerank_events: int = DEFAULT_RERANK_EVENTS) -> dict[str, Any]:
    """Train on the time holdout's first part (or reuse ``registry``'s model for it, see
    :func:`serving_model`), replay everything, score the rest. With ``rerankers``, the
    replay also collects the held candidate lists of the ``rerank_events`` events before
    the scored ones, made with a ranker trained on the events before those (``registry``'s
    ``collector`` folder keeps it); each config trains a re-ranker on them after the replay, scored as
    variant ``re-ranked h=HIDDEN`` on the scored events' held candidates; the first is
    attached to the serving version (the worker then orders its lists with it)."""
    from streamrec.models.datasets import events_from
    from streamrec.models.splits import time_holdout
    from streamrec.tools.prequential import Replay, bucket_for, over_time, replay, summarise

    frame = dataset.interactions
    start = len(frame) - len(time_holdout(frame, fraction)[1])
    # the re-ranker's training lists are made by a ranker trained before them: on lists of
    # events it was trained on, the serving ranker's scores are better than on new events
    early = min(len(frame) - start + rerank_events, len(frame) - 1) / len(frame)  # its holdout: from the lists on
    collect_from = len(frame) - len(time_holdout(frame, early)[1]) if rerankers else None
    with ExitStack() as stack:
        base = candidates or CandidateConfig()
        cfg, model = stack.enter_context(serving_model(dataset, models, Protocol("holdout", fraction), objective, registry))
        if base.ease:
            ensure_ease_neighbours(cfg, model["version"], frame.iloc[time_holdout(frame, fraction)[0]])
        collector = None
        if rerankers:
            print(f"re-ranker: training lists from events {collect_from:,} to {start:,}, made by a ranker trained before them")
            collector, made = stack.enter_context(serving_model(dataset, models, Protocol("holdout", early), objective,
                                                                registry / "collector" if registry else None))
            if base.ease:
                ensure_ease_neighbours(collector, made["version"], frame.iloc[time_holdout(frame, early)[0]])
        events = list(events_from(frame, dataset.name))

        async def scored() -> tuple[ScoredEvents, bool]:
            extra = {f"pipeline w={w:g}": base.model_copy(update={"ranker_weight": w}) for w in ranker_weights}
            # with re-rankers to train, ``pipeline`` is the fusion, whatever the version holds
            replayed = cfg.model_copy(update={"rerank": False}) if rerankers else cfg
            async with Replay(redis_url, replayed, base, features=features, extra=extra, collector=collector) as run:
                ease = run.pipeline.uses_ease
                if ease != run.collector.uses_ease:
                    raise RuntimeError("the serving and the collecting versions differ in EASE neighbours: the re-ranker's lists would too")
                return await replay(events, start, run, window_s, progress, collect_from=collect_from), ease

        result, ease = asyncio.run(scored())
        reranked = add_rerankers(result, rerankers, cfg, model["version"], progress, ease)
    span = float(frame["ts"].iloc[-1] - frame["ts"].iloc[start])
    catalogue, trained_users = frame["item_id"].nunique(), set(frame["user_id"].iloc[:start])
    known = np.fromiter((user in trained_users for user in result.users), bool, len(result.users))
    return {"dataset": dataset.name, "events": len(frame), "scored_from": start, "objective": objective,
            "model": model, "window_s": window_s, "rerankers": reranked, "ease_neighbours": ease,
            "summary": summarise(result, catalogue, 10),
            # the ranker learnt the users of the first part; most later events may come from new ones
            "by_user": {"trained_users": summarise(result, catalogue, 10, known), "new_users": summarise(result, catalogue, 10, ~known)},
            "arp_events": float(sum(result.arp_events) / max(len(result.arp_events), 1)),
            "over_time": over_time(result, bucket_for(span), 10)}


def ensure_ease_neighbours(models: ModelConfig, version: str, train: Any) -> None:
    """Attach EASE neighbours fitted on ``train`` (the events ``version``'s ranker learnt)
    unless ``version`` already has those (a reused registry's version may predate them)."""
    from streamrec.models.ease_neighbours import EASE_NEIGHBOURS, attach_ease_neighbours
    from streamrec.models.registry import ModelRegistry

    registry = ModelRegistry(models.registry_dir)
    if registry.metadata(version).get(EASE_NEIGHBOURS, {}).get("train_rows") != len(train):
        attach_ease_neighbours(registry, version, train)


def add_rerankers(scored: ScoredEvents, configs: Sequence[RerankConfig], models: ModelConfig, version: str,
                  progress: bool = True, ease: bool = False) -> dict[str, Any]:
    """Train a re-ranker per config on ``scored.train_lists``, add its variant, attach the
    first to ``version`` in ``models.registry_dir``; returns each one's training figures.
    ``ease``: the lists hold the EASE source (and its inputs, models/reranker.py)."""
    from streamrec.models.registry import ModelRegistry
    from streamrec.models.rerank_training import export_reranker, fit_reranker
    from streamrec.models.reranker import CONTEXT, RERANKER, Reranker, input_names, open_reranker
    from streamrec.tools.prequential import add_reranked

    out: dict[str, Any] = {}
    for n, cfg in enumerate(configs):
        net, fitted = fit_reranker(scored.train_lists, cfg, progress)
        info = {"inputs": list(input_names(CONTEXT, ease)), "context": list(CONTEXT), "config": cfg.model_dump(), "fit": fitted}
        with tempfile.TemporaryDirectory(prefix="streamrec-reranker-") as tmp:
            path = Path(tmp) / "reranker.onnx"
            export_reranker(net, path, np.concatenate(scored.train_lists.inputs[:50]))
            if n == 0:  # served from the registry, through the loader the worker uses
                registry = ModelRegistry(models.registry_dir)
                registry.attach(version, RERANKER, path, info)
                reranker = open_reranker(registry, version)
            else:
                reranker = Reranker(str(path), info)
            assert reranker is not None
            name = f"re-ranked h={cfg.hidden}"
            add_reranked(scored, name, [reranker.score(x) for x in scored.test_lists.inputs])
        out[name] = fitted
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in fitted.items()))
    return out


def run_topn(dataset: Dataset, models: ModelConfig, redis_url: str, *, objective: str = "implicit",
             features: FeatureConfig | None = None, candidates: CandidateConfig | None = None,
             sampled_only: bool = False) -> dict[str, Any]:
    """Leave-last-out top-N table of the references, the ranker and the live lists."""
    from streamrec.models.baselines import Popularity
    from streamrec.models.evaluation import evaluate_ranking, summarise
    from streamrec.models.topn import EASE, ImplicitALS, ImplicitBPR, ItemKNN
    from streamrec.tools.live_lists import LiveLists

    seed = models.train.seed
    with tempfile.TemporaryDirectory(prefix="streamrec-topn-") as registry:
        cfg = models.model_copy(update={"registry_dir": Path(registry)})
        live = LiveLists(objective_dataset(dataset, objective), cfg, redis_url, features, candidates or CandidateConfig())

        def chosen() -> list[Any]:
            return [Popularity(), ItemKNN(), EASE(), ImplicitALS(seed=seed), ImplicitBPR(seed=seed),
                    live.ranker(), live.recommender("candidates"), live.recommender("pipeline")]

        results = evaluate_ranking(dataset.interactions, Protocol.parse("leave-last-out"), chosen, seed, full=not sampled_only)
    return {"dataset": dataset.name, "rows": len(dataset), "protocol": "leave-last-out", "seed": seed, "objective": objective,
            "model": live.trained, "summary": summarise(results)}


def format_prequential(result: dict[str, Any]) -> str:
    from streamrec.models.evaluation import format_table

    parts = [format_table(result["summary"]), f"(ARP of the items people picked: {result['arp_events']:.1f})"]
    for group, table in result["by_user"].items():
        parts.append(f"events of {group.replace('_', ' ')}:\n" + format_table({v: {k: row[k] for k in ("hr@10", "ndcg@10", "events")} for v, row in table.items()}))
    return "\n".join(parts)


def worker_settings() -> tuple[FeatureConfig, CandidateConfig]:
    """The worker's feature and candidate settings (``STREAMREC_FEATURES__*``,
    ``STREAMREC_RECOMMEND__CANDIDATES__*``), in a Feast project of the run's own."""
    from streamrec.stream.settings import load_settings

    settings = load_settings()
    return settings.features.model_copy(update={"project": f"quality_{uuid.uuid4().hex[:8]}"}), settings.recommend.candidates


def cmd_quality(args: argparse.Namespace, models: ModelConfig, dataset: Dataset) -> dict[str, Any]:
    """``streamrec evaluate --protocol prequential[:FRACTION]|topn``: print, plot, return the JSON payload."""
    from streamrec.models.evaluation import format_table
    from streamrec.models.plots import plot_over_time

    kind, _, arg = args.protocol.partition(":")
    features, candidates = worker_settings()
    settings = {"features": features.model_dump(exclude={"project"}), "candidates": candidates.model_dump(), "ranker": models.ranker}
    with redis_for(args.redis_url) as url:
        if kind == "topn":
            result = run_topn(dataset, models, url, objective=args.objective, features=features, candidates=candidates,
                              sampled_only=args.sampled_only)
            print(format_table(result["summary"]))
            return result | {"settings": settings}
        result = run_prequential(dataset, models, url, fraction=float(arg or DEFAULT_FRACTION), objective=args.objective,
                                 features=features, candidates=candidates, window_s=args.window_s,
                                 registry=Path(args.model_registry) if args.model_registry else None,
                                 ranker_weights=args.ranker_weights or (),
                                 rerankers=[RerankConfig(hidden=h) for h in args.rerankers or ()],
                                 rerank_events=args.rerank_events or DEFAULT_RERANK_EVENTS) | {"settings": settings}
    print(format_prequential(result))
    plot = Path(args.json).with_suffix(".png") if args.json else Path(f"var/eval/prequential-{dataset.name}.png")
    print(f"over time: {plot_over_time(result['over_time'], plot, f'prequential, {dataset.name}')}")
    return result
