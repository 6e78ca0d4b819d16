"""Training the re-ranker (models/reranker.py) on held candidate lists.

Training data: for each training event, the candidate list its user held just before it
(the rows of :func:`~streamrec.models.reranker.list_inputs`, made by the worker's code,
e.g. ``tools/prequential.py``'s replay); the positive is the item the user picked next,
the negatives the list's other candidates. A list without the picked item teaches no
order and is left out (:meth:`ListSamples.add`).

The net is a small MLP over the standardised inputs (mean and scale of the training rows,
baked into the graph), trained with a listwise softmax loss: per list, the cross-entropy
of the positive against all the list's candidates. The last ``holdout`` share of the
lists (the latest events) stops the training when its HR@``k`` stops improving.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from streamrec.features.messages import ItemId
from streamrec.models.reranker import INPUT_NAME, OUTPUT_NAME

PARITY_TOLERANCE = 1e-5


class RerankConfig(BaseModel):
    """How the re-ranker is trained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(default=32, ge=0, le=1024, description="Width of the two hidden layers; 0 is a linear scorer.")
    epochs: int = Field(default=30, ge=1, le=1000)
    lists_per_step: int = Field(default=64, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    holdout: float = Field(default=0.1, gt=0, lt=1, description="Latest share of the lists kept for early stopping.")
    patience: int = Field(default=4, ge=1)
    k: int = Field(default=10, ge=1, description="Early stopping watches HR@k on the held-out lists.")
    seed: int = 42


@dataclass
class ListSamples:
    """Held candidate lists, in event order: per list its items (merge order), the
    re-ranker's inputs [n, F], the picked item's position in it (-1: not there) and,
    optionally, each candidate's count of earlier events when the list was scored (for
    ARP). ``keep_missing=False`` (training) drops a list without the picked item."""

    keep_missing: bool = False
    items: list[list[ItemId]] = field(default_factory=list)
    inputs: list[np.ndarray] = field(default_factory=list)
    positive: list[int] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positive)

    def add(self, items: Sequence[ItemId], inputs: np.ndarray, picked: ItemId, counts: np.ndarray | None = None) -> bool:
        """Record the list a user held before picking ``picked``; False when dropped."""
        if len(items) != len(inputs):
            raise ValueError(f"{len(items)} items but {len(inputs)} input rows")
        position = list(items).index(picked) if picked in items else -1
        if position < 0 and not self.keep_missing:
            return False
        self.items.append(list(items))
        self.inputs.append(inputs)
        self.positive.append(position)
        if counts is not None:
            self.counts.append(counts)
        return True

    def split(self, share: float) -> tuple[ListSamples, ListSamples]:
        """The earliest ``1 - share`` of the lists and the latest ``share`` (at least one each
        when there are two or more)."""
        cut = min(max(int(round(len(self) * (1 - share))), 1), max(len(self) - 1, 1))

        def part(sl: slice) -> ListSamples:
            return ListSamples(self.keep_missing, self.items[sl], self.inputs[sl], self.positive[sl], self.counts[sl])

        return part(slice(0, cut)), part(slice(cut, None))


def positive_ranks(samples: ListSamples, scores: Sequence[np.ndarray]) -> np.ndarray:
    """Per list, the picked item's 0-based rank under ``scores`` (higher first; a tie
    ranks it behind the candidates before it in merge order, as ``top_k`` does), -1 when
    the list lacks it."""
    out = np.full(len(samples), -1, np.int64)
    for i, (position, score) in enumerate(zip(samples.positive, scores)):
        if position >= 0:
            mine = score[position]
            out[i] = int(np.sum(score > mine) + np.sum(score[:position] == mine))
    return out


class RerankNet(nn.Module):
    """Standardise, then an MLP (``hidden`` wide, two layers; linear when 0) to one score."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        width = len(mean)
        if hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(width, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net((inputs - self.mean) / self.scale).squeeze(-1)

    def scores(self, samples: ListSamples) -> list[np.ndarray]:
        """Each list's scores (eval mode, no grad)."""
        self.eval()
        with torch.inference_mode():
            return [self(torch.as_tensor(x)).numpy() for x in samples.inputs]


def _padded(samples: ListSamples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """inputs [L, n_max, F] (zero padded), mask [L, n_max] (True: a candidate), positive [L]."""
    longest = max(len(x) for x in samples.inputs)
    width = samples.inputs[0].shape[1]
    inputs = np.zeros((len(samples), longest, width), np.float32)
    mask = np.zeros((len(samples), longest), bool)
    for i, x in enumerate(samples.inputs):
        inputs[i, : len(x)] = x
        mask[i, : len(x)] = True
    return torch.as_tensor(inputs), torch.as_tensor(mask), torch.as_tensor(samples.positive, dtype=torch.int64)


def listwise_loss(scores: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over lists of -log softmax(scores)[positive], padding excluded."""
    logits = scores.masked_fill(~mask, float("-inf"))
    return -torch.log_softmax(logits, dim=1).gather(1, positive[:, None]).mean()


def hit_rate_at(samples: ListSamples, scores: Sequence[np.ndarray], k: int) -> float:
    ranks = positive_ranks(samples, scores)
    return float(np.mean((ranks >= 0) & (ranks < k))) if len(ranks) else float("nan")


def fit_reranker(samples: ListSamples, cfg: RerankConfig, progress: bool = True) -> tuple[RerankNet, dict[str, float]]:
    """Train on ``samples`` (lists holding their positive, event order); returns the net of
    the best held-out epoch and its figures (``hr@k`` held out, the merge order's and the
    ranker's on the same lists, epochs run)."""
    if len(samples) < 2:
        raise ValueError(f"{len(samples)} training lists: need at least 2")
    torch.manual_seed(cfg.seed)
    train, held = samples.split(cfg.holdout)
    rows = np.concatenate(train.inputs)
    net = RerankNet(rows.mean(0), np.maximum(rows.std(0), 1e-3), cfg.hidden)
    inputs, mask, positive = _padded(train)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    best, best_state, waited, epochs = -1.0, copy.deepcopy(net.state_dict()), 0, 0
    bar = tqdm(range(cfg.epochs), desc=f"re-ranker h={cfg.hidden}", unit="epoch", disable=not progress)
    for _ in bar:
        net.train()
        for step in torch.randperm(len(train), generator=generator).split(cfg.lists_per_step):
            optimiser.zero_grad()
            listwise_loss(net(inputs[step]), mask[step], positive[step]).backward()
            optimiser.step()
        epochs += 1
        score = hit_rate_at(held, net.scores(held), cfg.k)
        bar.set_postfix(held_hr=f"{score:.4f}")
        if score > best:
            best, best_state, waited = score, copy.deepcopy(net.state_dict()), 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    net.load_state_dict(best_state)
    merge_order = [-np.arange(len(x), dtype=np.float32) for x in held.inputs]
    ranker = [x[:, 0] for x in held.inputs]  # score_z: the ranker's order
    return net, {f"held_hr@{cfg.k}": best, f"held_merge_order_hr@{cfg.k}": hit_rate_at(held, merge_order, cfg.k),
                 f"held_ranker_hr@{cfg.k}": hit_rate_at(held, ranker, cfg.k), "epochs": float(epochs),
                 "train_lists": float(len(train)), "held_lists": float(len(held))}


def export_reranker(net: RerankNet, path: Path, check: np.ndarray) -> float:
    """Write ``net`` to ``path`` (input ``inputs`` [N, F], output ``score`` [N], dynamic N)
    and return the max abs difference from eager on ``check`` rows; above
    ``PARITY_TOLERANCE`` raises ``RuntimeError`` and leaves no file."""
    import onnxruntime as ort

    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.as_tensor(check[: max(2, min(len(check), 64))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(net, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: torch.export.Dim("rows", min=1)},), dynamo=True, verbose=False)
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(path), external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        eager = net(torch.as_tensor(check)).numpy()
    diff = float(np.max(np.abs(session.run([OUTPUT_NAME], {INPUT_NAME: check})[0] - eager))) if len(check) else 0.0
    if not diff <= PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise RuntimeError(f"re-ranker ONNX parity {diff:.3g} > {PARITY_TOLERANCE:g}")
    return diff
