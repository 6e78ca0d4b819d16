"""The ranker with what SVD++ knows: the user's recent items as implicit feedback.

SVD++ adds to each user's factor p_u the normalised sum of implicit factors y_j of the
items the user rated, |N(u)|^-1/2 Σ y_j. Here N(u) is the user's recent items as the
stream keeps them (features/user_state.py: the newest ``FeatureConfig.recent_items``
distinct items, offline by :func:`streamrec.models.recent.recent_positions`), so the model stays
servable online: the worker feeds the list it holds in memory. The fourth input is
``recent`` int64 [N, K], item indices with 0 for a padding slot or an item the model
does not know (its y row is fixed at zero). The serving graph takes ``recent`` per
user instead, [U, K], and a fifth input ``recent_row`` int64 [N] naming each row's
list: a worker's batch is a few users times many candidates, so the implicit term is
computed once per user and gathered per row.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from streamrec.models.nets import Ranker, ServingRanker, _frozen


def implicit_vector(table: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
    """|N|^-1/2 Σ y_j over the non-padding entries of each row (zero for none)."""
    count = (recent > 0).sum(-1, keepdim=True).clamp(min=1).to(table.dtype)
    return F.embedding(recent, table).sum(1) * torch.rsqrt(count)


class RecentRanker(Ranker):
    """:class:`~streamrec.models.nets.Ranker` whose user vector is p_u + |N|^-1/2 Σ_{j ∈ recent} y_j,
    in the dot product and in the MLP alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """:class:`~streamrec.models.nets.Ranker`'s arguments; the implicit table matches its item table."""
        super().__init__(*args, **kwargs)
        rows, dim = self.mf.item_vec.weight.shape
        self.implicit = nn.Embedding(rows, dim, padding_idx=0)
        nn.init.normal_(self.implicit.weight, std=0.01)
        with torch.no_grad():
            self.implicit.weight[0].zero_()

    # a fourth input (and a fifth when served): not the ranker's call shape, on purpose
    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor, recent: torch.Tensor,  # type: ignore[override]
                recent_row: torch.Tensor | None = None) -> torch.Tensor:
        """``recent`` [N, K] per row, or [U, K] with ``recent_row`` [N] picking each row's."""
        implicit = implicit_vector(self.implicit.weight, recent)
        user_vec = self.mf.user_vec(user) + (implicit if recent_row is None else implicit[recent_row])
        item_vec = self.mf.item_vec(item)
        joined = torch.cat([user_vec, item_vec, self.transform(dense)], dim=-1)
        return self.mf.from_vectors(user, item, user_vec, item_vec) + self.mlp(joined)[:, 0]

    def penalty(self, user: torch.Tensor, item: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        implicit = self.implicit(recent).pow(2).sum(-1).sum(-1) / (recent > 0).sum(-1).clamp(min=1)
        return self.mf.penalty(user, item) + implicit.mean()

    def for_export(self) -> ServingRecentRanker:
        return ServingRecentRanker(self)


class ServingRecentRanker(ServingRanker):
    """:class:`~streamrec.models.nets.ServingRanker`'s graph with the implicit term added to the
    gathered user vector (export parity checks it against the ranker)."""

    def __init__(self, ranker: RecentRanker) -> None:
        super().__init__(ranker)
        self.implicit = _frozen(ranker.implicit.weight)

    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor, recent: torch.Tensor,  # type: ignore[override]
                recent_row: torch.Tensor) -> torch.Tensor:
        implicit = F.embedding(recent_row, implicit_vector(self.implicit, recent))
        return self.score(user, item, dense, F.embedding(user, self.user_vec) + implicit)
