"""The neural models. All share one call shape so training, export and scoring treat
them alike: ``forward(user int64[N], item int64[N], dense float32[N, F]) -> float32[N]``.

For the explicit objective the output is a rating; for the implicit one a logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class SeedModel(nn.Module):
    """The seed article's model, as written: r̂(u,i) = μ_u + μ_i + σ(W_u·x_i + b).

    μ_u and μ_i are per-user and per-item terms trained by MSE, started from the
    training means (μ_u = user mean − global/2, μ_i = item mean − global/2, so their
    sum starts at the usual user+item baseline); x_i are the item's content features
    (genres, year) or a constant 1 when the data set has none; ``dense`` is unused.
    """

    content: torch.Tensor  # a buffer (saved with the model, not trained)

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

    global_mean: torch.Tensor

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

    fill: torch.Tensor
    partner: torch.Tensor
    has_partner: torch.Tensor
    is_count: torch.Tensor
    center: torch.Tensor
    scale: torch.Tensor

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

    def for_export(self) -> ServingRanker:
        """The same function in fewer graph operations: what ONNX export writes."""
        return ServingRanker(self)


class ServingRanker(nn.Module):
    """A trained :class:`Ranker`'s function rearranged for inference: the same scores
    from cheaper onnxruntime kernels (export parity checks it against the ranker).

    At ~100 rows a call costs mostly per-operation overhead, and an elementwise op
    whose constant broadcasts along a short last axis (``[N, 4]`` against ``[4]``)
    costs ~4x a same-shape one (a Where more). So:

    - the dense features are transformed column-major (``[F, N]``, constants ``[F, 1]``);
    - "missing" is two selects: NaN → fill, then keep a value only where its gate
      column exceeds a threshold (a mean's count > 0; a count itself > 0, which is
      also the count's clamp at 0). The gate is read after the NaN fill, so a NaN
      count reads as its fill value, which must not be positive;
    - the standardisation's division is folded into the first layer's weights (its
      centring stays a subtraction: folding that too cancels badly for a tiny scale);
    - the first layer is three accumulating matrix products (no concatenation), and
      the dot product, biases, global mean and last layer add up in ``[N, 1]``.

    Equal to the ranker on every input but one: -inf in a column that is neither a
    count nor has one becomes the fill. Built in eval mode (no dropout).
    """

    fill: torch.Tensor
    gate: torch.Tensor
    threshold: torch.Tensor
    fill_gated: torch.Tensor
    is_count: torch.Tensor
    center: torch.Tensor

    def __init__(self, ranker: Ranker) -> None:
        super().__init__()
        mf, transform = ranker.mf, ranker.transform
        linears = [m for m in ranker.mlp if isinstance(m, nn.Linear)]
        fill, partner, is_count, has_partner = transform.fill, transform.partner, transform.is_count, transform.has_partner
        if bool((is_count & has_partner).any()) or bool((fill[partner[has_partner]] > 0).any()):
            raise ValueError("ServingRanker needs counts without partners, filled with values <= 0")
        dim, first = mf.user_vec.embedding_dim, linears[0]
        with torch.no_grad():
            self.user_vec = _frozen(mf.user_vec.weight)
            self.item_vec = _frozen(mf.item_vec.weight)
            self.user_bias = _frozen(mf.user_bias.weight + mf.global_mean + linears[-1].bias)
            self.item_bias = _frozen(mf.item_bias.weight)
            self.register_buffer("fill", _column(fill))
            self.register_buffer("gate", partner.clone())
            self.register_buffer("threshold", _column(torch.where(has_partner | is_count, 0.0, float("-inf"))))
            self.register_buffer("fill_gated", _column(torch.where(is_count, 0.0, fill)))
            self.register_buffer("is_count", _column(is_count))
            self.register_buffer("center", _column(transform.center))
            self.first_user = _frozen(first.weight[:, :dim].T)
            self.first_item = _frozen(first.weight[:, dim : 2 * dim].T)
            self.first_dense = _frozen((first.weight[:, 2 * dim :] / transform.scale).T)
            self.first_bias = _frozen(first.bias)
            self.hidden = nn.ModuleList(_copy_linear(layer) for layer in linears[1:-1])
            self.last = _frozen(linears[-1].weight.T)
        self.eval()

    def forward(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.score(user, item, dense, F.embedding(user, self.user_vec))

    def score(self, user: torch.Tensor, item: torch.Tensor, dense: torch.Tensor, user_vec: torch.Tensor) -> torch.Tensor:
        """The scores given each row's user vector (a subclass may add to the gathered one)."""
        item_vec = F.embedding(item, self.item_vec)
        columns = dense.T
        filled = torch.where(torch.isnan(columns), self.fill, columns)
        gated = torch.where(torch.index_select(filled, 0, self.gate) > self.threshold, filled, self.fill_gated)
        standard = torch.where(self.is_count, torch.log1p(gated), gated) - self.center
        hidden = torch.addmm(self.first_bias, standard.T, self.first_dense)
        hidden = torch.addmm(hidden, item_vec, self.first_item)
        hidden = torch.relu(torch.addmm(hidden, user_vec, self.first_user))
        for layer in self.hidden:
            hidden = torch.relu(layer(hidden))
        biases = F.embedding(user, self.user_bias) + F.embedding(item, self.item_bias)
        total = torch.addmm(biases + (user_vec * item_vec).sum(-1, keepdim=True), hidden, self.last)
        return total.reshape(-1)


def _column(values: torch.Tensor) -> torch.Tensor:
    """A per-feature vector as ``[F, 1]``: broadcasts along the batch in column-major data."""
    return values.detach().clone().reshape(-1, 1)


def _frozen(values: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(values.detach().clone().contiguous(), requires_grad=False)


def _copy_linear(layer: nn.Linear) -> nn.Linear:
    copy = nn.Linear(layer.in_features, layer.out_features)
    copy.load_state_dict(layer.state_dict())
    return copy.requires_grad_(False)
