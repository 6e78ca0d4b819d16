"""The offline export: feature history in Feast's offline store, point-in-time training sets."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from streamrec.features.config import FeatureConfig
from streamrec.features.export import event_frame, export, rating_labels, training_set
from streamrec.features.repo import apply_repo
from streamrec.models.datasets import events_from
from streamrec.models.datasets import synthetic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exported(features_redis_url: str, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = synthetic(n_users=30, n_items=20, n_events=1500, seed=3)
    frame = data.interactions.copy()
    frame["ts"] = frame["ts"] // 50_000 * 50_000  # many events share a second, as in MovieLens
    events = list(events_from(frame, data.name))
    data_dir = tmp_path_factory.mktemp("offline")
    cfg = FeatureConfig(project="export_test")
    repo = apply_repo(cfg, features_redis_url, data_dir)
    summary = export(events, cfg, data_dir, data_dir / "out", progress=False)
    return events, repo, summary


def test_export_writes_the_event_log_and_every_view(exported) -> None:  # type: ignore[no-untyped-def]
    events, _, summary = exported
    log = pd.read_parquet(summary["events"]["path"])
    assert len(log) == len(events) and set(log["event_id"]) == {e.event_id for e in events}
    for view in ("user_features", "item_features", "global_features"):
        history = pd.read_parquet(summary["views"][view]["path"])
        assert len(history) == summary["views"][view]["rows"] > 0
        assert history["event_timestamp"].dt.tz is not None


def test_training_set_is_point_in_time_correct(exported) -> None:  # type: ignore[no-untyped-def]
    events, repo, _ = exported
    labels = rating_labels(events)
    frame = training_set(repo, labels, ["user_features:n_rating", "item_features:rating_mean"])
    assert len(frame) == len(labels)
    ratings_by_item: dict[str, list[tuple[pd.Timestamp, float]]] = defaultdict(list)
    for e in events:
        ratings_by_item[e.item_id].append((pd.Timestamp(e.ts), e.rating))  # type: ignore[arg-type]
    for row in frame.itertuples(index=False):
        ts = row.event_timestamp
        earlier_user = sum(1 for e in events if e.user_id == row.user_id and pd.Timestamp(e.ts) < ts)
        earlier_item = [r for t, r in ratings_by_item[row.item_id] if t < ts]
        assert (0 if pd.isna(row.user_features__n_rating) else row.user_features__n_rating) == earlier_user
        if earlier_item:
            assert math.isclose(row.item_features__rating_mean, sum(earlier_item) / len(earlier_item), rel_tol=1e-9)
        else:
            assert pd.isna(row.item_features__rating_mean)


def test_event_frame_keeps_every_field() -> None:
    events = list(events_from(synthetic(n_events=5).interactions, "synthetic"))
    frame = event_frame(events)
    assert list(frame["event_id"]) == [e.event_id for e in events]
    assert list(frame["rating"]) == [e.rating for e in events]
    assert str(frame["event_timestamp"].dt.tz) == "UTC"


def test_cli_registers_its_commands() -> None:
    import argparse

    from streamrec.tools.features_cli import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    bench = sub.add_parser("bench").add_subparsers()
    register(sub, bench)
    args = parser.parse_args(["features", "export", "--dataset", "synthetic", "--limit", "10"])
    assert (args.dataset, args.limit, callable(args.func)) == ("synthetic", 10, True)
    args = parser.parse_args(["bench", "features", "--json", "x.json"])
    assert args.json_path == Path("x.json")
