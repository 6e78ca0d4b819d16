"""Distillation: a much smaller ranker trained to reproduce a teacher's scores.

The student has the teacher's shape with narrow embeddings and one small hidden
layer; its targets are the teacher's predictions on the training rows (explicit:
ratings; implicit: logits would need a soft-label loss, so only explicit is offered).
"""

from __future__ import annotations

import pandas as pd

from streamrec.models.config import TrainConfig
from streamrec.models.recommenders import NeuralRecommender

STUDENT = {"embedding_dim": 8, "hidden": (16,), "dropout": 0.0}


def distil(teacher: NeuralRecommender, train: pd.DataFrame, progress: bool = True, **overrides: object) -> NeuralRecommender:
    """Fit and return a student on ``train`` labelled by ``teacher``. Blocking."""
    if teacher.objective != "explicit":
        raise ValueError("distillation is implemented for the explicit objective")
    cfg: TrainConfig = teacher.cfg.model_copy(update={**STUDENT, **overrides})
    student = NeuralRecommender("ranker", cfg, "explicit", teacher.content, progress)
    student.name = "distilled ranker"
    student.fit(train, targets=teacher.predict(train))
    return student
