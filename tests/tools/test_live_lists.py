"""The live lists as a leave-last-out model: an item scores by its place in the list."""

from __future__ import annotations

import pandas as pd
import pytest

from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig
from streamrec.models.datasets import synthetic
from streamrec.models.evaluation import rank_sampled
from streamrec.tools.live_lists import LiveLists


def lists_of(held: dict[str, list[str]]) -> LiveLists:
    live = LiveLists(synthetic(n_events=50), ModelConfig(), "redis://unused", None, CandidateConfig())
    live.lists = {"pipeline": held}
    return live


def test_earlier_places_score_higher_and_items_outside_the_list_tie_last() -> None:
    model = lists_of({"u1": ["c", "a", "b"]}).recommender("pipeline")
    rows = pd.DataFrame({"user_id": ["u1"] * 5 + ["u2"], "item_id": ["a", "b", "c", "x", "y", "a"]})

    assert model.predict(rows).tolist() == [2.0, 1.0, 3.0, 0.0, 0.0, 0.0]


def test_a_positive_outside_the_list_ranks_behind_every_negative() -> None:
    model = lists_of({"u1": ["n1", "p"], "u2": ["n1"]}).recommender("pipeline")
    test = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["p", "p"], "ts": [0, 0]})
    negatives = pd.DataFrame([["n1", "n2"], ["n1", "n2"]]).to_numpy(object)

    assert rank_sampled(model, test, negatives).tolist() == [1, 2]


def test_an_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        lists_of({}).recommender("best")
