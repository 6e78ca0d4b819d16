"""The neural models. All share one call shape so training, export and scoring treat
them alike: ``forward(user int64[N], item int64[N], dense float32[N, F]) -> float32[N]``.

For the explicit objective the output is a rating; for the implicit one a logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class SeedModel(nn.Module):
    """The seed article's model, as written: r̂(u,i) = μ_u + μ_i + σ(W_u·x_i + b).

    μ_u and μ_i are per-user and per-item terms trained by MSE, started from the
    training means (μ_u = user mean − global/2, μ_i = item mean − global/2, so their
    sum starts at the usual user+item baseline); x_i are the item's content features
    (genres, year) or a constant 1 when the data set has none; ``dense`` is unused.
    """

    def __init__(self, n_users: int, n_items: int, content: np.ndarray) -> None:
        super().__init__()
        self.mu_user = nn.Embedding(n_users + 1, 1)
        self.mu_item = nn.Embedding(n_items + 1, 1)
        self.weights = nn.Embedding(n_users + 1, content.shape[1])
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("content", torch.as_tensor(content, dtype=torch.float32))
        nn.init.normal_(self.weights.weight, std=0.01)

    def init_means(self, user_mean: np.ndarray, item_mean: np.ndarray, global_mean: float) -> None:
        with torch.no_grad():
            self.mu_user.weight[:, 0] = torch.as_tensor(user_mean - global_mean / 2, dtype=torch.float32)
            self.mu_item.weight[:, 0] = torch.as_tensor(item_mean - global_mean / 2, dtype=torch.float32)

    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        personal = (self.weights(user) * self.content[item]).sum(-1) + self.bias
        return self.mu_user(user)[:, 0] + self.mu_item(item)[:, 0] + torch.sigmoid(personal)

    def penalty(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.weights(user).pow(2).sum(-1).mean()


class BiasedMF(nn.Module):
    """Biased matrix factorisation: μ + b_u + b_i + p_u·q_i."""

    def __init__(self, n_users: int, n_items: int, dim: int, global_mean: float) -> None:
        super().__init__()
        self.user_bias = nn.Embedding(n_users + 1, 1)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        self.user_vec = nn.Embedding(n_users + 1, dim)
        self.item_vec = nn.Embedding(n_items + 1, dim)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        for table in (self.user_vec, self.item_vec):
            nn.init.normal_(table.weight, std=0.05)

    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.from_vectors(user, item, self.user_vec(user), self.item_vec(item))

    def from_vectors(self, user: torch.Tensor, item: torch.Tensor, user_vec: torch.Tensor, item_vec: torch.Tensor) -> torch.Tensor:
        dot = (user_vec * item_vec).sum(-1)
        return self.global_mean + self.user_bias(user)[:, 0] + self.item_bias(item)[:, 0] + dot

    def penalty(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        terms = self.user_vec(user).pow(2).sum(-1) + self.item_vec(item).pow(2).sum(-1)
        return (terms + self.user_bias(user)[:, 0] ** 2 + self.item_bias(item)[:, 0] ** 2).mean()


class DenseTransform(nn.Module):
    """Raw online feature values → standardised MLP inputs, inside the exported graph.

    A missing value (NaN, or a mean whose count column ``partner`` is 0, as the online
    store writes a mean with no data) becomes the training fill value; counts go
    through log1p; then (x − center) / scale. So the online scorer passes feature
    values as the store holds them.
    """

    def __init__(self, fill: np.ndarray, is_count: np.ndarray, center: np.ndarray, scale: np.ndarray, partner: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32))
        self.register_buffer("partner", torch.as_tensor(np.where(partner < 0, np.arange(len(partner)), partner), dtype=torch.int64))
        self.register_buffer("has_partner", torch.as_tensor(partner >= 0, dtype=torch.bool))
        self.register_buffer("is_count", torch.as_tensor(is_count, dtype=torch.bool))
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, dense: torch.Tensor) -> torch.Tensor:
        empty = self.has_partner & ~(torch.index_select(dense, 1, self.partner) > 0)
        filled = torch.where(torch.isnan(dense) | empty, self.fill, dense)
        logged = torch.where(self.is_count, torch.log1p(filled.clamp(min=0.0)), filled)
        return (logged - self.center) / self.scale


class Ranker(nn.Module):
    """The ranker: biases + embeddings (a dot product) + an MLP over the user and item
    embeddings and the streaming dense features."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        hidden: Sequence[int],
        transform: DenseTransform,
        global_mean: float,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.mf = BiasedMF(n_users, n_items, dim, global_mean)
        self.transform = transform
        layers: list[nn.Module] = []
        width = 2 * dim + len(transform.fill)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        # One lookup per table, shared by the dot product and the MLP (fewer graph ops).
        user_vec, item_vec = self.mf.user_vec(user), self.mf.item_vec(item)
        joined = torch.cat([user_vec, item_vec, self.transform(dense)], dim=-1)
        return self.mf.from_vectors(user, item, user_vec, item_vec) + self.mlp(joined)[:, 0]

    def penalty(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.mf.penalty(user, item)
