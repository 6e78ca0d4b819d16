from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.models.datasets import load_dataset, load_event_log, load_instacart, load_movielens, load_ratings_file, synthetic


def test_movielens_from_the_installed_package() -> None:
    data = load_movielens()

    assert len(data) == 100_004 and data.explicit
    assert data.interactions["user_id"].nunique() == 671
    assert data.interactions["ts"].is_monotonic_increasing
    assert {"Drama", "year"} <= set(data.item_content.columns)


def test_instacart_sample_as_implicit_events_in_each_users_order() -> None:
    data = load_instacart()

    assert len(data) == 150_000 and not data.explicit
    assert data.interactions["rating"].isna().all()
    assert data.interactions["ts"].is_monotonic_increasing


def test_udata_and_ratings_csv_read_alike(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t20\t3\t881250950\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,881250949\n2,20,3.0,881250950\n")

    udata, csv = load_ratings_file(tmp_path / "u.data"), load_ratings_file(tmp_path / "ratings.csv")

    pd.testing.assert_frame_equal(udata.interactions, csv.interactions)
    assert udata.interactions["user_id"].tolist() == ["1", "2"]


def test_event_log_in_the_stream_schema(tmp_path: Path) -> None:
    events = [
        {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "rating", "rating": 4.5, "ts": "2026-01-01T00:00:00Z"},
        {"event_id": "e2", "user_id": "u", "type": "search", "query": "shoes", "ts": "2026-01-01T00:00:01Z"},
        {"event_id": "e3", "user_id": "u", "item_id": "j", "type": "click", "ts": "2026-01-01T00:00:02+00:00"},
    ]
    path = tmp_path / "dump.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events))
    pd.DataFrame(events).to_parquet(tmp_path / "dump.parquet")

    data, parquet = load_event_log(path), load_event_log(tmp_path / "dump.parquet")

    assert data.interactions["item_id"].tolist() == ["i", "j"]  # the search has no item
    assert data.interactions["ts"].tolist() == [1767225600, 1767225602]
    assert not data.explicit
    pd.testing.assert_frame_equal(data.interactions, parquet.interactions)


def test_event_log_rejects_rows_outside_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "type": "rating", "ts": 1}))

    with pytest.raises(ValueError, match="rating"):
        load_event_log(path)


def test_synthetic_is_seeded() -> None:
    assert synthetic(seed=4).interactions.equals(synthetic(seed=4).interactions)
    assert not synthetic(seed=4).interactions.equals(synthetic(seed=5).interactions)
    assert np.all(synthetic().interactions["rating"].between(0.5, 5.0))


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="movielens"):
        load_dataset("netflix")
