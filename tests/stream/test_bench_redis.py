"""``streamrec bench redis`` on a small store: both ways answer alike, every figure is there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streamrec.tools.bench_redis import measure, start_redis
from streamrec.stream.runtime import stop_process

pytestmark = pytest.mark.integration


def test_both_ways_answer_alike_and_each_operation_has_its_figures(tmp_path: Path) -> None:
    process, url = start_redis(tmp_path)
    try:
        result = asyncio.run(measure(url, events=5000, repeats=3, warmup=1))
    finally:
        stop_process(process, grace_s=5)
    assert process.returncode is not None
    assert result["replies_equal"] and all(result["replies_equal"].values())
    for row in result["operations"].values():
        assert row["resp"]["wall"]["median_ms"] > 0 and row["pipeline"]["cpu"]["median_ms"] > 0
        assert row["speedup"]["wall"] > 0
