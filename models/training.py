"""Mini-batch training with early stopping, seeded, with a progress bar.

Explicit objective: MSE on ratings (validation metric RMSE). Implicit objective: BCE
on observed interactions against ``negatives`` sampled items per positive (validation
metric: the same BCE on a fixed sample). The best epoch's weights are restored.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from streamrec.models.config import TrainConfig
from streamrec.models.encoding import Inputs

Objective = Literal["explicit", "implicit"]
NegativeSampler = Callable[[Inputs, np.random.Generator], Inputs]


@dataclass
class History:
    """Per-epoch losses; ``val_metric`` is RMSE (explicit) or BCE (implicit)."""

    train_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_epoch: int = 0


def seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _tensors(batch: Inputs) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """The net's inputs (user, item, dense[, recent]) and the target."""
    return tuple(map(torch.as_tensor, batch.model_inputs())), torch.as_tensor(batch.target)


def predict(model: nn.Module, batch: Inputs, chunk: int = 65536) -> np.ndarray:
    """Model outputs for every row (eval mode, no grad)."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk):
            inputs, _ = _tensors(batch.take(np.arange(start, min(start + chunk, len(batch)))))
            outs.append(model(*inputs).numpy())
    return np.concatenate(outs) if outs else np.zeros(0, np.float32)


def _concat(parts: list[Inputs]) -> Inputs:
    user, item, dense, target, ts = (np.concatenate([getattr(p, name) for p in parts]) for name in ("user", "item", "dense", "target", "ts"))
    recent = None if parts[0].recent is None else np.concatenate([p.recent for p in parts if p.recent is not None])
    return Inputs(user, item, dense, target, ts, recent)


def _epoch_data(train: Inputs, objective: Objective, sampler: NegativeSampler | None, rng: np.random.Generator) -> Inputs:
    if objective == "explicit":
        return train
    assert sampler is not None, "the implicit objective needs a negative sampler"
    positives = Inputs(train.user, train.item, train.dense, np.ones(len(train), np.float32), train.ts, train.recent)
    return _concat([positives, sampler(positives, rng)])


def _val_metric(model: nn.Module, val: Inputs, objective: Objective) -> float:
    out = predict(model, val)
    if objective == "explicit":
        return float(np.sqrt(np.mean((out - val.target) ** 2)))
    logits = torch.as_tensor(out)
    return float(nn.functional.binary_cross_entropy_with_logits(logits, torch.as_tensor(val.target)))


def fit(
    model: nn.Module,
    train: Inputs,
    val: Inputs,
    cfg: TrainConfig,
    objective: Objective = "explicit",
    sampler: NegativeSampler | None = None,
    label: str = "train",
    progress: bool = True,
) -> History:
    """Train in place; returns the learning curve. Blocking, CPU, deterministic for a seed."""
    rng = seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if objective == "implicit":
        val = _epoch_data(val, objective, sampler, np.random.default_rng(cfg.seed + 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.MSELoss() if objective == "explicit" else nn.BCEWithLogitsLoss()
    history, best_state, best = History(), copy.deepcopy(model.state_dict()), float("inf")
    bar = tqdm(range(cfg.epochs), desc=label, disable=not progress, leave=False)
    for epoch in bar:
        data = _epoch_data(train, objective, sampler, rng)
        history.train_loss.append(_train_epoch(model, data, cfg, optimiser, loss_fn, rng))
        history.val_metric.append(_val_metric(model, val, objective))
        bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", val=f"{history.val_metric[-1]:.4f}")
        if history.val_metric[-1] < best - 1e-5:
            best, history.best_epoch, best_state = history.val_metric[-1], epoch, copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= cfg.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return history


def _train_epoch(
    model: nn.Module,
    data: Inputs,
    cfg: TrainConfig,
    optimiser: torch.optim.Optimizer,
    loss_fn: nn.Module,
    rng: np.random.Generator,
) -> float:
    model.train()
    inputs, target = _tensors(data)
    order = torch.as_tensor(rng.permutation(len(data)))
    total = 0.0
    penalty = cast("Callable[..., torch.Tensor]", model.penalty)  # every model of models/nets.py has one
    for start in range(0, len(data), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        batch = [part[rows] for part in inputs]
        loss = loss_fn(model(*batch), target[rows])
        # the penalty takes the forward's inputs but dense: (user, item[, recent])
        regularised = loss + cfg.embedding_l2 * penalty(*batch[:2], *batch[3:]) if cfg.embedding_l2 else loss
        optimiser.zero_grad(set_to_none=True)
        regularised.backward()
        optimiser.step()
        total += float(loss.detach()) * len(rows)
    return total / max(len(data), 1)
