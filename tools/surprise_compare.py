"""scikit-surprise's SVD, SVD++ and BaselineOnly behind the OfflineRecommender
contract, so they run on exactly the same folds as our models in the same evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ALGORITHMS = ("SVD", "SVDpp", "BaselineOnly")


class SurpriseModel:
    explicit_only = True

    def __init__(self, algorithm: str, seed: int = 0) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown surprise algorithm {algorithm!r}")
        self.algorithm, self.seed = algorithm, seed
        self.name = f"surprise {algorithm}"

    def _build(self) -> Any:
        try:
            import surprise
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError("--compare surprise needs scikit-surprise: pip install scikit-surprise==1.1.5") from exc
        if self.algorithm == "BaselineOnly":
            return surprise.BaselineOnly(verbose=False)
        return getattr(surprise, self.algorithm)(random_state=self.seed)

    def fit(self, train: pd.DataFrame) -> None:
        from surprise import Dataset, Reader

        scale = (float(train["rating"].min()), float(train["rating"].max()))
        data = Dataset.load_from_df(train[["user_id", "item_id", "rating"]], Reader(rating_scale=scale))
        self.algo = self._build()
        self.algo.fit(data.build_full_trainset())

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        predict = self.algo.predict
        return np.fromiter((predict(u, i).est for u, i in zip(rows["user_id"], rows["item_id"])), np.float64, len(rows))


def surprise_models(seed: int = 0) -> list[SurpriseModel]:
    return [SurpriseModel(name, seed) for name in ALGORITHMS]
