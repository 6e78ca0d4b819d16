"""Settings of the models package.

The lead nests :class:`ModelConfig` into the process ``Settings`` (environment
variables ``STREAMREC_MODELS__<FIELD>``). Every default works out of the box on a
fresh checkout; a bad value fails validation with the field's name in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Provider = Literal["auto", "cpu", "cuda"]
RankerKind = Literal["ranker", "recent"]
Variant = Literal["auto", "fp32", "int8", "int8_static", "fp16"]


class TrainConfig(BaseModel):
    """Hyper-parameters of the neural models (seed model, biased MF, ranker)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    epochs: int = Field(default=40, ge=1, le=1000)
    batch_size: int = Field(default=1024, ge=1)
    lr: float = Field(default=3e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    embedding_dim: int = Field(default=32, ge=1, le=1024)
    embedding_l2: float = Field(default=1e-2, ge=0.0)
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    patience: int = Field(default=3, ge=1)
    val_fraction: float = Field(default=0.05, gt=0.0, lt=0.5)
    negatives: int = Field(default=4, ge=1, description="sampled negatives per positive (implicit)")
    recent_items: int = Field(default=20, ge=1, le=1000, description="recent items the ranker+recent model reads (the stream keeps STREAMREC_FEATURES__RECENT_ITEMS)")
    recent_weight_decay: float = Field(
        default=1e-4, ge=0.0,
        description="Adam weight decay of the ranker+recent model, in place of weight_decay (chosen by validation RMSE, README)",
    )
    threads: int = Field(default=1, ge=1, description="torch intra-op threads while training (1: no spinning on a shared 2-core box)")

    @field_validator("hidden")
    @classmethod
    def _positive_layers(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(width < 1 for width in value):
            raise ValueError("hidden needs at least one layer, each width >= 1")
        return value


class ModelConfig(BaseModel):
    """Where artifacts live and how a worker serves them."""

    model_config = ConfigDict(extra="forbid")

    registry_dir: Path = Path("var/models")
    provider: Provider = "auto"
    variant: Variant = "auto"
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    poll_interval_s: float = Field(default=2.0, gt=0.0, description="seconds between registry checks")
    rerank: bool = Field(
        default=True,
        description="order lists with the re-ranker attached to the serving version when it has one "
                    "(models/reranker.py); false: the fusion of the model's order with the merge order",
    )
    gate_rmse: float = Field(default=0.005, ge=0.0, description="max RMSE loss of a quantized variant")
    gate_ndcg: float = Field(default=0.005, ge=0.0, description="max NDCG@10 loss of a quantized variant")
    default_dataset: str = "movielens"
    ranker: RankerKind = Field(
        default="recent",
        description="what train publishes: 'recent' (the ranker with the user's recent items, models/recent_ranker.py) or 'ranker'",
    )
    train: TrainConfig = TrainConfig()

    @field_validator("registry_dir")
    @classmethod
    def _not_empty(cls, value: Path) -> Path:
        if str(value).strip() in ("", "."):
            raise ValueError("registry_dir must name a directory")
        return value
