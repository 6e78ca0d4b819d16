from __future__ import annotations

import numpy as np
import pandas as pd

from streamrec.models.distill import distil
from streamrec.models.metrics import rmse
from streamrec.models.recommenders import NeuralRecommender, catalogue
from tests.models.conftest import FAST


def test_ranker_beats_the_global_mean_on_held_out_rows(ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = split

    error = rmse(ranker.predict(test), test["rating"])

    assert error < rmse(np.full(len(test), train["rating"].mean()), test["rating"]) - 0.1
    assert ranker.history.best_epoch < len(ranker.history.train_loss)


def test_training_is_seeded(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    runs = []
    for _ in range(2):
        model = NeuralRecommender("mf", FAST.model_copy(update={"epochs": 2}), progress=False)
        model.fit(split[0])
        runs.append(model.predict(split[1]))

    np.testing.assert_array_equal(runs[0], runs[1])


def test_cold_start_rows_still_score(ranker: NeuralRecommender) -> None:
    rows = pd.DataFrame({"user_id": ["never-seen"], "item_id": ["nor-this"], "ts": [2_000_000_000]})

    assert np.isfinite(ranker.predict(rows)).all()


def test_seed_model_as_written_learns(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = split
    model = NeuralRecommender("seed", FAST, progress=False)

    model.fit(train)

    assert rmse(model.predict(test), test["rating"]) < rmse(np.full(len(test), train["rating"].mean()), test["rating"])


def test_implicit_objective_ranks_held_out_items_above_random_ones(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = split
    model = NeuralRecommender("ranker", FAST, "implicit", progress=False)
    model.fit(train)
    catalogue = train["item_id"].unique()
    other = test.assign(item_id=np.random.default_rng(0).choice(catalogue, len(test)))

    assert np.mean(model.predict(test) > model.predict(other)) > 0.6  # chance: below 0.5


def test_distilled_student_tracks_its_teacher(ranker: NeuralRecommender, split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    student = distil(ranker, split[0], progress=False, embedding_dim=4, hidden=(8,))

    assert sum(p.numel() for p in student.net.parameters()) < sum(p.numel() for p in ranker.net.parameters())
    assert rmse(student.predict(split[1]), ranker.predict(split[1])) < 0.3


def test_catalogue_offers_ratings_models_or_ranking_models() -> None:
    explicit = {m.name for m in catalogue(FAST, "explicit", None, progress=False)}
    implicit = {m.name for m in catalogue(FAST, "implicit", None, progress=False)}

    assert {"seed model", "bias baseline", "ranker"} <= explicit and "popularity" not in explicit
    assert {"popularity", "ranker", "biased MF"} <= implicit and "seed model" not in implicit
