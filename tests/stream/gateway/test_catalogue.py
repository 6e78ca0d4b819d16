"""The item catalogue: filled from any data set, named where the data set has names."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from streamrec.models.datasets import synthetic
from streamrec.stream.gateway.catalogue import Catalogue, catalogue_path, from_dataset, load_catalogue
from tests.stream.gateway.conftest import offline_settings


def test_any_data_set_fills_a_catalogue_by_popularity() -> None:
    data = synthetic(n_users=30, n_items=20, n_events=400)
    catalogue = from_dataset(data)
    counts = data.interactions["item_id"].value_counts()
    assert len(catalogue) == data.interactions["item_id"].nunique()
    assert [i.popularity for i in catalogue.items] == sorted(counts.to_list(), reverse=True)
    assert catalogue.items[0].item_id == counts.idxmax() and catalogue.items[0].title == f"synthetic item {counts.idxmax()}"
    assert catalogue.users[0] == data.interactions["user_id"].value_counts().idxmax()


def test_metadata_names_items_and_unknown_values_are_left_out() -> None:
    data = synthetic(n_users=5, n_items=3, n_events=50)
    ids = sorted(data.interactions["item_id"].unique())
    meta = pd.DataFrame({"title": ["Alpha", "Beta"], "year": [1999.0, math.nan],
                         "genres": ["Drama|Comedy", "(no genres listed)"]}, index=ids[:2])
    catalogue = from_dataset(data, meta)
    alpha, beta = catalogue.get(ids[0]), catalogue.get(ids[1])
    assert alpha is not None and (alpha.title, alpha.year, alpha.genres) == ("Alpha", 1999, ("Drama", "Comedy"))
    assert beta is not None and (beta.title, beta.year, beta.genres) == ("Beta", None, ())
    if len(ids) > 2:
        assert catalogue.get(ids[2]).title.startswith("synthetic item")  # type: ignore[union-attr]
    again = Catalogue.from_json(catalogue.to_json())
    assert again.items == catalogue.items and again.users == catalogue.users and again.genres == ["Comedy", "Drama"]
    assert catalogue.lookup([ids[1], "nope", ids[0]]) == [beta, alpha]
    assert catalogue.search("alp")[1] == [alpha] and catalogue.search(genre="Comedy")[0] == 1


def test_the_catalogue_is_built_once_then_read(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, catalogue="movielens")
    catalogue = load_catalogue(settings)
    forrest = catalogue.get("356")
    assert forrest is not None and (forrest.title, forrest.year) == ("Forrest Gump", 1994)
    assert "Comedy" in forrest.genres and len(catalogue) > 9000
    built = catalogue_path(settings).stat().st_mtime_ns
    assert len(load_catalogue(settings)) == len(catalogue)
    assert catalogue_path(settings).stat().st_mtime_ns == built
