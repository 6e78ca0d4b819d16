from __future__ import annotations

import numpy as np
import pytest

from streamrec.models.metrics import hit_rate, mae, mrr, ndcg, ranks, rmse


def test_rmse_and_mae_by_hand() -> None:
    predicted, actual = np.array([3.0, 4.0, 1.0]), np.array([4.0, 4.0, 3.0])

    assert rmse(predicted, actual) == pytest.approx(np.sqrt(5 / 3))
    assert mae(predicted, actual) == pytest.approx(1.0)


def test_ranks_count_ties_against_the_positive() -> None:
    positive = np.array([0.9, 0.5, 0.1])
    negatives = np.array([[0.1, 0.2], [0.5, 0.1], [0.3, 0.2]])

    assert ranks(positive, negatives).tolist() == [0, 1, 2]


def test_hit_rate_and_ndcg_by_hand() -> None:
    rank = np.array([0, 1, 3, 12])

    assert hit_rate(rank, k=10) == pytest.approx(0.75)
    assert ndcg(rank, k=10) == pytest.approx((1 + 1 / np.log2(3) + 1 / np.log2(5) + 0) / 4)
    assert hit_rate(rank, k=1) == pytest.approx(0.25)


def test_mrr_counts_only_ranks_inside_the_list() -> None:
    rank = np.array([0, 1, 3, 12])

    assert mrr(rank, k=10) == pytest.approx((1 + 1 / 2 + 1 / 4 + 0) / 4)
    assert mrr(rank, k=2) == pytest.approx((1 + 1 / 2) / 4)
