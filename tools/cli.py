"""The ``streamrec`` command: the pipeline's own commands (streamrec.stream.cli: stack,
worker, replay, tail, gateway, recommendations, settings) plus every tool's, each added by
its module's ``register(subparsers, bench_subparsers)``: features, models / train /
evaluate, demo, and the benchmarks (``streamrec bench ...``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from streamrec.stream import cli as pipeline_cli
from streamrec.tools import (
    bench_broker,
    bench_e2e,
    bench_gateway,
    bench_recovery,
    bench_redis,
    bench_soak,
    demo,
    features_cli,
    models_cli,
    reliability,
)

TOOLS = (
    features_cli.register,
    models_cli.register,
    demo.register,
    bench_e2e.register,
    bench_broker.register,
    bench_recovery.register,
    bench_soak.register,
    bench_redis.register,
    bench_gateway.register,
    reliability.register,
)


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline_cli.main(argv, TOOLS)


if __name__ == "__main__":
    sys.exit(main())
