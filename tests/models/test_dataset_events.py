from __future__ import annotations

import pandas as pd

from streamrec.models.datasets import events_from


def frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20], "rating": [4.0, None], "ts": [1_000, 2_000]})


def test_ids_are_deterministic_per_row_so_a_replay_is_a_resend() -> None:
    first, again = list(events_from(frame(), "ml")), list(events_from(frame(), "ml"))
    assert [e.event_id for e in first] == [e.event_id for e in again] == ["ml-0", "ml-1"]


def test_a_run_marks_the_same_rows_as_new_events() -> None:
    one, two = list(events_from(frame(), "ml", run="a1")), list(events_from(frame(), "ml", run="b2"))
    assert not {e.event_id for e in one} & {e.event_id for e in two}
    assert [(e.user_id, e.item_id, e.type, e.rating) for e in one] == [(e.user_id, e.item_id, e.type, e.rating) for e in two]
