"""The ranker's user columns come from the user's state in memory (stream/ranking.py):
they must equal the columns of the row that state writes to the online store."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from tests.features.feature_strategies import user_events

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ClickEvent
from streamrec.features.schema import USER_VIEW, VIEWS
from streamrec.features.user_state import Skipped, UserState, apply_user_event
from streamrec.models.serving import FeaturePlan

CFG = FeatureConfig(recent_items=4, covisit_window_items=3, covisit_window_s=600)
# every user column a model may read: the numeric features of the user view
PLAN = FeaturePlan([f"{USER_VIEW}:{name}" for name, dtype in VIEWS[USER_VIEW].features if dtype in ("float64", "int64")])


def _columns(row: dict[str, object]) -> np.ndarray:
    return np.array([row[feature] for _, feature in PLAN.user], np.float64)


@given(user_events())
def test_the_user_columns_from_the_state_equal_the_row_it_writes(events: list[ClickEvent]) -> None:
    state = UserState()
    for n, event in enumerate(events):
        result = apply_user_event(state, event, CFG, source=(0, n))
        if isinstance(result, Skipped):
            continue
        from_state = _columns(PLAN.user_row(state))
        handed_over = _columns(PLAN.user_row(UserState.from_dict(state.to_dict())))  # the recommend role's copy
        assert np.array_equal(from_state, _columns(result.row.values), equal_nan=True)
        assert np.array_equal(handed_over, from_state, equal_nan=True)


def test_a_plan_without_user_columns_computes_none() -> None:
    assert FeaturePlan(["item_features:n_rating"]).user_row(UserState()) == {}
