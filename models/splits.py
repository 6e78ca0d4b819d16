"""Evaluation protocols: k-fold (as Surprise does), time-ordered holdout, leave-last-out.

Each split is a pair of integer position arrays into the interactions frame (train,
test); they are disjoint and together cover every row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Protocol:
    """A parsed ``--protocol`` value: ``kfold:K``, ``holdout:FRACTION`` or ``leave-last-out``."""

    kind: str
    value: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Protocol:
        kind, _, arg = text.partition(":")
        if kind == "kfold":
            folds = int(arg or 5)
            if folds < 2:
                raise ValueError(f"protocol {text!r}: kfold needs at least 2 folds")
            return cls("kfold", folds)
        if kind == "holdout":
            fraction = float(arg or 0.2)
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"protocol {text!r}: holdout fraction must be in (0, 1)")
            return cls("holdout", fraction)
        if kind == "leave-last-out" and not arg:
            return cls("leave-last-out")
        raise ValueError(f"unknown protocol {text!r}; use kfold:K, holdout:FRACTION or leave-last-out")

    def splits(self, frame: pd.DataFrame, seed: int = 0) -> Iterator[Split]:
        if self.kind == "kfold":
            yield from kfold(len(frame), int(self.value), seed)
        elif self.kind == "holdout":
            yield time_holdout(frame, self.value)
        else:
            yield leave_last_out(frame)


def kfold(n_rows: int, folds: int, seed: int = 0) -> Iterator[Split]:
    """Shuffle once with ``seed``, cut into ``folds`` near-equal test folds (Surprise's KFold)."""
    order = np.random.default_rng(seed).permutation(n_rows)
    bounds = np.linspace(0, n_rows, folds + 1).astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        test = np.sort(order[start:stop])
        train = np.sort(np.concatenate([order[:start], order[stop:]]))
        yield train, test


def time_holdout(frame: pd.DataFrame, fraction: float) -> Split:
    """The latest ``fraction`` of rows by ``ts`` is the test set (ties broken by row order)."""
    order = np.argsort(frame["ts"].to_numpy(), kind="stable")
    cut = len(order) - max(1, int(round(len(order) * fraction)))
    return np.sort(order[:cut]), np.sort(order[cut:])


def leave_last_out(frame: pd.DataFrame) -> Split:
    """Each user's last event (latest ``ts``, then last row) is test; one-event users stay in train."""
    positions = pd.Series(np.arange(len(frame)), index=frame.index)
    ordered = frame.assign(_pos=positions.to_numpy()).sort_values(["ts", "_pos"], kind="stable")
    last = ordered.groupby("user_id", sort=False)["_pos"].last()
    sizes = ordered.groupby("user_id", sort=False).size()
    test = np.sort(last[sizes[last.index] > 1].to_numpy())
    train = np.setdiff1d(np.arange(len(frame)), test)
    return train, test
