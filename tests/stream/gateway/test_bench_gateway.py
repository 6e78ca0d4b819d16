"""``streamrec bench gateway`` end to end, small: it runs on the session's broker and Redis,
opens its streams, posts, and writes figures that add up."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streamrec.tools.bench_gateway import handle

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_gateway_writes_its_figures(bootstrap_servers: str, redis_url: str, model_registry: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMREC_MODELS__REGISTRY_DIR", str(model_registry))
    out = tmp_path / "gateway.json"
    args = argparse.Namespace(clients=6, monitors=2, rate=10.0, duration=3.0, click_every=0.0, grace=2.0, json=out,
                              bootstrap=bootstrap_servers, redis_url=redis_url.rpartition("/")[0] + "/6")
    assert handle(args) == 0
    report = json.loads(out.read_text())
    assert report["streams_open"] == 8 and report["streams_dropped"] == 0
    assert report["events"] >= 25 and report["answered"] + report["lost"] == report["events"] and report["lost"] == 0
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["max_ms"]
    assert 40 < report["gateway_rss_mb"] < 1000 and report["browser_lists"] == 0
    assert "POST → list on the user's stream" in capsys.readouterr().out
