from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamrec.models.splits import Protocol, kfold, leave_last_out, time_holdout


def test_kfold_folds_are_disjoint_and_cover_every_row() -> None:
    folds = list(kfold(103, 5, seed=1))

    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(103))
    assert all(len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 103 for train, test in folds)


def test_kfold_is_seeded() -> None:
    assert [t.tolist() for _, t in kfold(50, 5, 7)] == [t.tolist() for _, t in kfold(50, 5, 7)]
    assert [t.tolist() for _, t in kfold(50, 5, 7)] != [t.tolist() for _, t in kfold(50, 5, 8)]


def test_time_holdout_tests_on_the_latest_rows() -> None:
    frame = pd.DataFrame({"ts": [5, 1, 9, 3, 7]})

    train, test = time_holdout(frame, 0.4)

    assert test.tolist() == [2, 4] and train.tolist() == [0, 1, 3]


def test_leave_last_out_holds_out_each_users_latest_event() -> None:
    frame = pd.DataFrame({"user_id": ["a", "a", "b", "a", "c", "b"], "ts": [1, 3, 2, 2, 1, 2]})

    train, test = leave_last_out(frame)

    assert test.tolist() == [1, 5]  # a's ts=3; b's tie at ts=2 goes to the later row; c has one event
    assert train.tolist() == [0, 2, 3, 4]


@pytest.mark.parametrize("text", ["kfold:1", "holdout:1.5", "bogus", "leave-last-out:3"])
def test_bad_protocols_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="protocol"):
        Protocol.parse(text)
