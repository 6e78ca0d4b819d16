"""``streamrec features export``, ``streamrec verify`` and ``streamrec bench features``.

``register(subparsers, bench_subparsers)`` adds the commands to the lead's parser;
``python -m streamrec.tools.features_cli ...`` runs them standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def register(subparsers: Any, bench_subparsers: Any) -> None:
    features = subparsers.add_parser("features", help="the feature store: offline export and training sets")
    commands = features.add_subparsers(title="features commands", metavar="ACTION")
    export = commands.add_parser(
        "export", help="event log + feature history to parquet (Feast offline store); optional training set"
    )
    source = export.add_mutually_exclusive_group()
    source.add_argument("--dataset", default="movielens", help="movielens | instacart | synthetic (default movielens)")
    source.add_argument("--data", type=Path, help="a ratings file or event log (see streamrec replay)")
    source.add_argument("--from-topic", action="store_true", help="read the clickstream topic from the beginning")
    export.add_argument("--limit", type=int, help="use at most this many events (the earliest)")
    export.add_argument("--out", type=Path, default=Path("var/export"), help="where events.parquet goes")
    export.add_argument("--training-set", type=Path, help="also write a point-in-time training set (parquet) here")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=_export)

    verify = subparsers.add_parser(
        "verify", help="recompute every user's and item's counts and means from clickstream; compare with Redis"
    )
    verify.add_argument("--wait", type=float, default=0.0, dest="wait_s",
                        help="retry while the worker catches up; give up after this many seconds "
                             "without progress (default 0: compare once)")
    verify.add_argument("--json", type=Path, dest="json_path", help="also write the report here")
    verify.set_defaults(func=_verify)

    bench = bench_subparsers.add_parser("features", help="update throughput, freshness, online read latency")
    bench.add_argument("--json", type=Path, required=True, dest="json_path", help="write the figures here")
    bench.add_argument("--events", type=int, default=10_000, help="events for the throughput run")
    bench.add_argument("--rate", type=float, default=1000.0, help="events/s for the freshness run")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds of the freshness run")
    bench.add_argument("--reads", type=int, default=300, help="repetitions of the read comparison")
    bench.add_argument("--plot", type=Path, help="freshness histogram (PNG); default next to the JSON")
    bench.set_defaults(func=_bench)


def _export(args: argparse.Namespace) -> int:
    from streamrec.features.export import dump_topic, export, rating_labels, training_set
    from streamrec.features.repo import apply_repo
    from streamrec.stream.runtime import feature_repo_dir
    from streamrec.stream.settings import load_settings

    settings = load_settings()
    if args.from_topic:
        events = asyncio.run(_read_clickstream(settings, dump_topic))
    else:
        from streamrec.models.datasets import events_from, load_dataset

        data = load_dataset(None, args.data) if args.data else load_dataset(args.dataset)
        frame = data.interactions if args.limit is None else data.interactions.iloc[: args.limit]
        events = list(events_from(frame, data.name))
    events = events[: args.limit] if args.limit else events
    data_dir = feature_repo_dir(settings)
    repo = apply_repo(settings.features, settings.redis.effective_url, data_dir)
    summary = export(events, settings.features, data_dir, args.out, progress=not args.quiet)
    summary["feature_repo"] = str(repo)
    if args.training_set:
        frame = training_set(repo, rating_labels(events))
        args.training_set.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(args.training_set, index=False)
        summary["training_set"] = {"path": str(args.training_set), "rows": len(frame), "columns": len(frame.columns)}
    print(json.dumps(summary, indent=2))
    return 0


async def _read_clickstream(settings: Any, dump: Any) -> list[Any]:
    from streamrec.infra.kafka_clients import consumer

    client = consumer(settings.broker, settings.topics.clickstream, auto_offset_reset="earliest")
    await client.start()
    try:
        return list(await dump(client, max_bytes=settings.worker.max_event_bytes))
    finally:
        await client.stop()


def _verify(args: argparse.Namespace) -> int:
    from streamrec.features.verify import verify
    from streamrec.stream.runtime import check_services
    from streamrec.stream.settings import load_settings

    settings = load_settings()
    check_services(settings)
    report = asyncio.run(verify(settings, wait_s=args.wait_s))
    print(report.summary())
    for line in report.mismatches:
        print(f"  {line}")
    if args.json_path:
        args.json_path.parent.mkdir(parents=True, exist_ok=True)
        args.json_path.write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from streamrec.tools.bench_features import BenchOptions, run_bench

    options = BenchOptions(
        events=args.events, rate=args.rate, duration_s=args.duration, reads=args.reads,
        json_path=args.json_path, plot_path=args.plot or args.json_path.with_suffix(".png"),
    )
    return run_bench(options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.tools.features_cli")
    sub = parser.add_subparsers(metavar="COMMAND")
    bench = sub.add_parser("bench").add_subparsers(metavar="BENCH")
    register(sub, bench)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
