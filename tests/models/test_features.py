from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.models.features import EXPLICIT_FEATURES, IMPLICIT_FEATURES, streaming_features

events = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from("xyz"), st.one_of(st.none(), st.sampled_from([1.0, 2.5, 4.0, 5.0])), st.integers(0, 6)),
    min_size=0,
    max_size=30,
)


def frame(rows: list[tuple[str, str, float | None, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "rating": [np.nan if r[2] is None else r[2] for r in rows], "ts": [r[3] for r in rows]},
        columns=["user_id", "item_id", "rating", "ts"],
    ).astype({"ts": "int64", "rating": "float64"})


def brute_force(history: pd.DataFrame, user: str, item: str, ts: int) -> list[float]:
    before = history[history["ts"] < ts]
    out = []
    for column, key in (("user_id", user), ("item_id", item)):
        mine = before[before[column] == key]
        rated = mine["rating"].dropna()
        out += [rated.mean() if len(rated) else np.nan, float(len(rated))]
    return out


@settings(max_examples=60, deadline=None)
@given(history=events, queries=events)
def test_features_equal_a_direct_recomputation_over_strictly_earlier_events(history, queries) -> None:
    hist, query = frame(history), frame(queries)

    got = streaming_features(hist, query, EXPLICIT_FEATURES)

    expected = np.array([brute_force(hist, u, i, t) for u, i, t in zip(query.user_id, query.item_id, query.ts)]).reshape(-1, 4)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=1e-6)


def test_a_row_never_sees_itself_or_the_future() -> None:
    hist = frame([("a", "x", 5.0, 1), ("a", "x", 1.0, 2), ("a", "y", 3.0, 3)])

    got = streaming_features(hist, hist, EXPLICIT_FEATURES)

    np.testing.assert_allclose(got[:, 0], [np.nan, 5.0, 3.0])  # user mean before each row
    np.testing.assert_allclose(got[:, 1], [0, 1, 2])
    np.testing.assert_allclose(got[:, 3], [0, 1, 0])  # item y has no earlier rating


def test_changing_later_events_does_not_change_earlier_features() -> None:
    base = frame([("a", "x", 4.0, 1), ("a", "x", 2.0, 5)])
    changed = frame([("a", "x", 4.0, 1), ("a", "x", 0.5, 5), ("a", "z", 1.0, 9)])
    query = frame([("a", "x", None, 3)])

    assert np.array_equal(streaming_features(base, query, EXPLICIT_FEATURES), streaming_features(changed, query, EXPLICIT_FEATURES))


def test_event_counts_include_unrated_events() -> None:
    hist = frame([("a", "x", None, 1), ("a", "y", 3.0, 2), ("b", "x", None, 2)])
    query = frame([("a", "x", None, 10)])

    assert streaming_features(hist, query, IMPLICIT_FEATURES).tolist() == [[2.0, 2.0]]
