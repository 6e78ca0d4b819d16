"""Training-time features equal serving-time ones: for every row of a generated event
sequence, what models/features.py computes is what the stream's user and item state
(features/user_state.py, features/item_state.py) held just before that event."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.features.config import FeatureConfig
from streamrec.features.item_state import ItemState, apply_item_event
from streamrec.features.schema import ITEM_VIEW, USER_VIEW
from streamrec.features.user_state import UserState, UserUpdate, apply_user_event
from streamrec.models.datasets import events_from
from streamrec.models.features import EXPLICIT_FEATURES, IMPLICIT_FEATURES, streaming_features

NAMES = EXPLICIT_FEATURES + IMPLICIT_FEATURES
CFG = FeatureConfig()

rows = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["i1", "i2", "i3", "i4"]),
        st.one_of(st.none(), st.floats(0.0, 5.0)),
        st.integers(0, 4),  # seconds between this event and the previous one: 0 makes ties
    ),
    max_size=40,
)


def frame(generated: list[tuple[str, str, float | None, int]]) -> pd.DataFrame:
    """An interaction frame in event-time order, as a data set replays."""
    return pd.DataFrame(
        {
            "user_id": [u for u, _, _, _ in generated],
            "item_id": [i for _, i, _, _ in generated],
            "rating": [np.nan if r is None else r for _, _, r, _ in generated],
            "ts": np.cumsum([1_500_000_000] + [gap for *_, gap in generated])[1:],
        }
    ).astype({"ts": "int64", "rating": "float64"})


def serving_features(history: pd.DataFrame) -> np.ndarray:
    """Each row's features from the stream's states before the first event at the row's
    time (training cannot order events that share a time, so it sees none of them)."""
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    out = []
    events = list(events_from(history, "parity"))
    for ts in dict.fromkeys(history["ts"]):
        batch = [e for e, t in zip(events, history["ts"]) if t == ts]
        for event in batch:
            user = users.get(event.user_id, UserState()).features()
            item = items.get(str(event.item_id), ItemState()).features(CFG)
            out.append([_as_trained({USER_VIEW: user, ITEM_VIEW: item}[view], stat) for view, stat in map(_split, NAMES)])
        for event in batch:
            update = apply_user_event(users.setdefault(event.user_id, UserState()), event, CFG)
            assert isinstance(update, UserUpdate)
            for msg in update.item_messages:
                apply_item_event(items.setdefault(msg.item_id, ItemState()), msg, CFG)
    return np.array(out, np.float32).reshape(len(history), len(NAMES))


def _split(name: str) -> tuple[str, str]:
    view, _, stat = name.partition(":")
    return view, stat


def _as_trained(row: dict[str, object], stat: str) -> float:
    """The online row's value as training holds it: a mean without ratings is NaN, not 0.0."""
    if stat == "rating_mean" and row["n_rating"] == 0:
        return float("nan")
    return float(row[stat])  # type: ignore[arg-type]


@settings(max_examples=80, deadline=None)
@given(generated=rows)
def test_training_features_equal_the_stream_state_before_each_event(generated) -> None:
    history = frame(generated)

    trained = streaming_features(history, history, NAMES)

    np.testing.assert_array_equal(trained, serving_features(history))
