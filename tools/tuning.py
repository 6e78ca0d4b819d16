"""``python -m streamrec.tools.tuning``: validation RMSE of a neural model under settings to compare.

Each setting (a JSON object of :class:`~streamrec.models.config.TrainConfig` fields) trains the
model on the training part of fold 1 of the 5-fold split that ``streamrec evaluate``
uses (same seed) and reports the best epoch's RMSE on the validation rows held out of
that training part; the fold's test rows are never read, so a choice made here does
not peek at the figures the evaluation reports. Blocking; one line per setting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from streamrec.models.config import TrainConfig
from streamrec.models.datasets import load_dataset
from streamrec.models.recommenders import NAMES, NeuralRecommender
from streamrec.models.splits import kfold


def validation_rmse(kind: str, settings: dict[str, object], dataset: str = "movielens") -> tuple[float, int]:
    """(best validation RMSE, its epoch) of ``kind`` trained with ``settings``."""
    cfg = TrainConfig(**settings)  # type: ignore[arg-type]
    data = load_dataset(dataset)
    train, _ = next(kfold(len(data.interactions), 5, cfg.seed))
    model = NeuralRecommender(kind, cfg, "explicit", data.item_content, progress=True)
    model.fit(data.interactions.iloc[train].reset_index(drop=True))
    return min(model.history.val_metric), model.history.best_epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamrec.tools.tuning", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(NAMES), default="recent")
    parser.add_argument("--dataset", default="movielens")
    parser.add_argument("settings", nargs="+", help='TrainConfig fields as JSON, e.g. \'{"weight_decay": 1e-4}\'')
    args = parser.parse_args(argv)
    for text in args.settings:
        began = time.perf_counter()
        rmse, epoch = validation_rmse(args.model, json.loads(text), args.dataset)
        print(f"{NAMES[args.model]} {text}: validation RMSE {rmse:.4f} (epoch {epoch + 1}), {time.perf_counter() - began:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
