"""EASE neighbours: the table fitted on the training events, its registry attachment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrec.models.ease_neighbours import EASE_NEIGHBOURS, NeighbourTable, attach_ease_neighbours, fit_ease_neighbours, open_ease_neighbours
from streamrec.models.registry import ArtifactError, ModelRegistry


def two_clusters() -> pd.DataFrame:
    """Users 0-19 take items a b c, users 20-39 take x y z, every user once each."""
    rows = [(u, item) for u in range(20) for item in "abc"] + [(u, item) for u in range(20, 40) for item in "xyz"]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def empty_version(tmp_path: Path) -> tuple[ModelRegistry, str]:
    (tmp_path / "versions" / "v1").mkdir(parents=True)
    (tmp_path / "versions" / "v1" / "metadata.json").write_text(json.dumps({"variants": {}}))
    return ModelRegistry(tmp_path), "v1"


def test_an_items_best_neighbours_are_the_items_taken_with_it() -> None:
    table = fit_ease_neighbours(two_clusters(), l2=1.0, neighbours=2)

    lists = table.lists()

    assert sorted(lists["a"][0]) == ["b", "c"] and sorted(lists["y"][0]) == ["x", "z"]
    assert lists["a"][1][0] >= lists["a"][1][1] > 0
    assert table.index.shape == (6, 2)


def test_the_attached_table_is_verified_and_read_back(tmp_path: Path) -> None:
    registry, version = empty_version(tmp_path)
    assert open_ease_neighbours(registry, version) is None

    assert attach_ease_neighbours(registry, version, two_clusters(), l2=1.0, neighbours=2)
    loaded = open_ease_neighbours(registry, version)

    assert loaded == fit_ease_neighbours(two_clusters(), l2=1.0, neighbours=2).lists()
    assert registry.metadata(version)[EASE_NEIGHBOURS]["file"] == "ease_neighbours.npz"
    (tmp_path / "versions" / version / "ease_neighbours.npz").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        open_ease_neighbours(registry, version)


def test_a_catalogue_too_large_for_the_dense_inverse_gets_no_table(tmp_path: Path) -> None:
    registry, version = empty_version(tmp_path)

    assert not attach_ease_neighbours(registry, version, two_clusters(), max_items=5)
    assert EASE_NEIGHBOURS not in registry.metadata(version)


def test_a_table_survives_its_file(tmp_path: Path) -> None:
    table = NeighbourTable(np.array(["a", "b"]), np.array([[1], [0]], np.int32), np.array([[0.5], [0.25]], np.float32))

    table.save(tmp_path / "t.npz")

    assert NeighbourTable.load(tmp_path / "t.npz").lists() == {"a": (["b"], [0.5]), "b": (["a"], [0.25])}
