from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.models.baselines import BiasBaseline, GlobalMean, Popularity, RunningMeans
from streamrec.models.evaluation import evaluate_ranking, evaluate_ratings, rank_full, sample_negatives, summarise
from streamrec.models.splits import Protocol


def test_bias_baseline_solves_the_regularised_least_squares_by_hand() -> None:
    train = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "rating": [5.0, 3.0, 1.0], "ts": [1, 2, 3]})
    model = BiasBaseline(reg_user=0.0, reg_item=1e9, sweeps=1)  # items frozen at 0: b_u is the user's mean offset

    model.fit(train)

    mean = 3.0
    assert model.predict(train.iloc[[0, 2]]).tolist() == pytest.approx([mean + 1.0, mean - 2.0])


def test_running_means_use_only_earlier_ratings() -> None:
    train = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"], "rating": [5.0, 1.0], "ts": [1, 9]})
    model = RunningMeans(shrink=0.0)
    model.fit(train)
    query = pd.DataFrame({"user_id": ["a"], "item_id": ["z"], "ts": [5]})

    assert model.predict(query).tolist() == [5.0]  # mean 3 + user deviation (5 - 3); the ts=9 rating is unseen


def test_rating_evaluation_runs_every_model_on_every_fold(ratings: pd.DataFrame) -> None:
    results = evaluate_ratings(ratings, Protocol.parse("kfold:3"), lambda: [GlobalMean(), BiasBaseline()])

    table = summarise(results)
    assert len(results["bias baseline"]["rmse"]) == 3
    assert table["bias baseline"]["rmse"] < table["global mean"]["rmse"] - 0.05


def test_sampled_negatives_are_unseen_and_distinct(ratings: pd.DataFrame) -> None:
    train, test = ratings.iloc[:3000], ratings.iloc[3000:3050]

    negatives = sample_negatives(train, test, 20, seed=0)

    seen = train.groupby("user_id")["item_id"].agg(set)
    for (user, positive), row in zip(zip(test.user_id, test.item_id), negatives):
        assert len(set(row)) == 20 and positive not in row and not set(row) & seen.get(user, set())


def test_ranking_protocol_reports_hr_and_ndcg(ratings: pd.DataFrame) -> None:
    results = summarise(evaluate_ranking(ratings, Protocol.parse("leave-last-out"), lambda: [Popularity()]))

    row = results["popularity"]
    assert 0.0 < row["ndcg@10_sampled"] <= row["hr@10_sampled"] <= 1.0
    assert row["hr@10_sampled"] > 0.2  # a random order hits about 10 of 100
    assert 0.0 < row["ndcg@10_full"] <= row["hr@10_full"] <= 1.0


def test_full_ranking_excludes_the_users_training_items() -> None:
    train = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"], "rating": np.nan, "ts": [1, 2, 3]})
    test = pd.DataFrame({"user_id": ["a"], "item_id": ["z"], "ts": [4]})
    model = Popularity()
    model.fit(pd.concat([train, pd.DataFrame({"user_id": ["c"] * 3, "item_id": ["x", "x", "y"], "rating": np.nan, "ts": [1, 1, 1]})]))

    assert rank_full(model, train, test).tolist() == [0]  # x and y are popular but already seen by a
