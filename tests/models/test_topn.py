"""The top-N references on small matrices whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.models.topn import EASE, ImplicitALS, ImplicitBPR, ItemKNN, MatrixRecommender


def clusters(users_per_side: int = 12) -> pd.DataFrame:
    """Users 'a*' pick among items a0..a5, users 'b*' among b0..b5; each user skips one item."""
    rows = []
    for side in "ab":
        for u in range(users_per_side):
            skipped = u % 6
            rows += [(f"{side}u{u}", f"{side}{i}") for i in range(6) if i != skipped]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
    return frame.assign(rating=np.nan, ts=np.arange(len(frame)))


def scores(model: MatrixRecommender, user: str, items: list[str]) -> np.ndarray:
    return model.predict(pd.DataFrame({"user_id": [user] * len(items), "item_id": items}))


@pytest.mark.parametrize("model", [ItemKNN(neighbours=4), EASE(l2=10.0), ImplicitALS(factors=4, iterations=10),
                                   ImplicitBPR(factors=4, iterations=200, lr=0.05)], ids=lambda m: m.name)
def test_the_item_a_user_skipped_in_their_cluster_beats_the_other_cluster(model: MatrixRecommender) -> None:
    model.fit(clusters())

    own, other = scores(model, "au0", ["a0"]), scores(model, "au0", [f"b{i}" for i in range(6)])

    assert own[0] > other.max()


def test_unknown_users_and_items_score_zero() -> None:
    model = ItemKNN()
    model.fit(clusters())

    assert scores(model, "nobody", ["a0"]).tolist() == [0.0]
    assert scores(model, "au0", ["no-such-item"]).tolist() == [0.0]


def test_item_knn_similarities_are_the_cosines_of_the_item_columns() -> None:
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3"], "item_id": ["x", "y", "x", "z", "y"]})
    model = ItemKNN(neighbours=10)
    model.fit(frame.assign(rating=np.nan, ts=0))

    columns = model.matrix.toarray()
    norms = np.linalg.norm(columns, axis=0)
    expected = columns.T @ columns / np.outer(norms, norms)
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(model.sims, expected, atol=1e-6)


def test_item_knn_keeps_only_the_nearest_neighbours_per_item() -> None:
    model = ItemKNN(neighbours=2)
    model.fit(clusters())

    assert ((model.sims != 0).sum(axis=0) <= 2).all()


def test_ease_solves_its_constrained_least_squares() -> None:
    """Off the diagonal, the gradient of ||X − XB||² + λ||B||² vanishes; the diagonal is 0."""
    model = EASE(l2=3.0)
    model.fit(clusters(5))

    gram = (model.matrix.T @ model.matrix).toarray()
    gradient = (gram + 3.0 * np.eye(len(gram))) @ model.weights - gram
    off_diagonal = gradient[~np.eye(len(gram), dtype=bool)]
    assert np.abs(off_diagonal).max() < 1e-3
    assert np.all(np.diag(model.weights) == 0.0)


def test_repeated_interactions_count_once() -> None:
    frame = clusters()
    model, twice = EASE(l2=10.0), EASE(l2=10.0)
    model.fit(frame)
    twice.fit(pd.concat([frame, frame.head(30)]))

    assert np.allclose(model.weights, twice.weights)
