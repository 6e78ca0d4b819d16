"""The live pipeline's lists as leave-last-out models (``tools/quality.py``'s top-N table).

:class:`LiveLists` trains the serving ranker on the split's training rows (the same
leave-last-out split, through ``models/pipeline.py``'s :func:`train_and_publish`),
replays those rows through the worker's code (``tools/prequential.py``'s
:class:`Replay`: state updates, a real Redis store, ``stream/ranking.py``'s
recommenders) and keeps, for every user, each variant's list as of the user's last
training event, ``max_candidates`` deep. A :class:`LiveRecommender` scores an item by
its place in one variant's list (``depth - position``; 0 outside it, so an item the
list lacks ties with every other such item and ranks last); :class:`FittedRanker` is
the trained ranker on its own, scoring any (user, item) row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from streamrec.features.config import FeatureConfig
from streamrec.features.messages import ItemId, UserId
from streamrec.models.candidates import CandidateConfig
from streamrec.models.config import ModelConfig
from streamrec.models.datasets import Dataset
from streamrec.tools.prequential import VARIANTS, Replay

REQUESTS_PER_BATCH = 64


class LiveLists:
    """Lists of every variant for each user of a training split (computed once per split)."""

    def __init__(self, dataset: Dataset, models: ModelConfig, redis_url: str, features: FeatureConfig | None,
                 candidates: CandidateConfig) -> None:
        self.dataset, self.models, self.redis_url = dataset, models, redis_url
        self.features, self.candidates = features, candidates
        self.lists: dict[str, dict[UserId, list[ItemId]]] = {}
        self.trained: dict[str, Any] = {}
        self._fitted_rows = -1

    def ensure(self, train: pd.DataFrame) -> None:
        """Train and replay for ``train`` unless done already (blocking; runs its own event loop)."""
        if self._fitted_rows == len(train):
            return
        from streamrec.models.pipeline import train_and_publish
        from streamrec.models.splits import Protocol

        result = train_and_publish(self.dataset, self.models, Protocol.parse("leave-last-out"), promote=True, progress=False)
        if self._rows_of(result.version) != len(train):
            raise ValueError("the ranker was trained on another split than the one evaluated")
        self.model = result.model
        self.trained = {"version": result.version, "metrics": result.metrics}
        self.lists = asyncio.run(self._replay(train))
        self._fitted_rows = len(train)

    def _rows_of(self, version: str) -> int:
        from streamrec.models.registry import ModelRegistry

        return int(ModelRegistry(self.models.registry_dir).metadata(version)["data"]["train_rows"])

    async def _replay(self, train: pd.DataFrame) -> dict[str, dict[UserId, list[ItemId]]]:
        from streamrec.models.datasets import events_from

        events = list(events_from(train.sort_values("ts", kind="stable"), self.dataset.name))
        out: dict[str, dict[UserId, list[ItemId]]] = {v: {} for v in VARIANTS}
        depth = self.candidates.max_candidates
        async with Replay(self.redis_url, self.models, self.candidates, top_k=depth, features=self.features) as run:
            run.apply(events)
            causes = list({e.user_id: e for e in events}.values())  # each user's last event
            for start in range(0, len(causes), REQUESTS_PER_BATCH):
                for variant, lists in (await run.lists(causes[start : start + REQUESTS_PER_BATCH])).items():
                    out[variant].update(lists)
        return out

    def recommender(self, variant: str) -> LiveRecommender:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
        return LiveRecommender(self, variant)

    def ranker(self) -> FittedRanker:
        return FittedRanker(self)


class LiveRecommender:
    """One variant's lists as a :class:`~streamrec.models.recommenders.OfflineRecommender`."""

    explicit_only = False

    def __init__(self, source: LiveLists, variant: str) -> None:
        self.source, self.variant = source, variant
        self.name = "live pipeline" if variant == "pipeline" else f"live {variant}"

    def fit(self, train: pd.DataFrame) -> None:
        self.source.ensure(train)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        lists = self.source.lists[self.variant]
        places: dict[UserId, dict[ItemId, float]] = {}
        for user in pd.unique(rows["user_id"]):
            items: Sequence[ItemId] = lists.get(user, [])
            places[user] = {item: float(len(items) - p) for p, item in enumerate(items)}
        return np.fromiter((places[u].get(i, 0.0) for u, i in zip(rows["user_id"], rows["item_id"])), np.float64, len(rows))


class FittedRanker:
    """The ranker :class:`LiveLists` trained, scoring rows itself (no candidates)."""

    explicit_only = False

    def __init__(self, source: LiveLists) -> None:
        self.source = source
        self.name = "ranker alone"

    def fit(self, train: pd.DataFrame) -> None:
        self.source.ensure(train)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.source.model.predict(rows)
