"""Building blocks shared by the neural-process family (CNP, NP, ANP).

Shapes: inputs ``x [T, N, x_dim]`` and outputs ``y [T, N, y_dim]`` with a leading task
dimension; every block works on all tasks of a meta-batch at once (all tasks of an
:class:`~innerloop.tasks.episodes.Episodes` batch have the same ``S`` and ``Q``).

* :class:`DeterministicEncoder`: ``r_i = h([x_i, y_i])`` per point; :func:`mean_aggregate` pools
  ``r_C = mean_i r_i`` (Garnelo et al. 2018a).
* :class:`LatentEncoder`: ``s = mean_i g([x_i, y_i])``, then ``(mu, raw) = head(s)`` and
  ``sigma = 0.1 + 0.9 * sigmoid(raw)`` (Kim et al. 2019, appendix; the floor keeps the KL finite).
* :class:`Decoder`: ``(mean, raw) = f([x, representation])`` and
  ``std = 0.1 + 0.9 * softplus(raw)`` (the floor of Le et al. 2018, "Empirical evaluation of
  neural process objectives": without it the likelihood of a context point can grow without bound).
* :class:`MultiHeadCrossAttention`: queries are embedded target inputs, keys embedded context
  inputs, values the deterministic ``r_i``; per head ``softmax(q k^T / sqrt(d_head)) v`` with
  ``q = W_q e(x*)``, ``k = W_k e(x_i)``, ``v = W_v r_i``; heads concatenated, then ``W_o``
  (Vaswani et al. 2017, as used by Kim et al. 2019).
* :func:`gaussian_kl` and :func:`gaussian_log_likelihood`: the closed forms of
  :mod:`innerloop.functional.gaussians` in the NPs' terms (standard deviations, summed over the
  last dimension).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.functional.gaussians import diagonal_gaussian_kl, gaussian_log_density

from innerloop.tasks.episodes import Episodes

DEFAULT_HIDDEN_SIZES = (128, 128, 128)
STD_FLOOR = 0.1


def mlp(in_features: int, hidden_sizes: Sequence[int], out_features: int) -> nn.Sequential:
    """``Linear → ReLU`` for each hidden size, then a final ``Linear`` to ``out_features``."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def hidden_sizes_from_config(config: Any) -> tuple[int, ...]:
    """The encoders' and decoder's layer widths: ``config.model.hidden_sizes`` or (128, 128, 128)."""
    sizes = tuple(getattr(config.model, "hidden_sizes", None) or DEFAULT_HIDDEN_SIZES)
    if min(sizes) < 1:
        raise ValueError(f"model.hidden_sizes must be positive layer widths, got {list(sizes)}")
    return sizes


def support_and_query(episodes: Episodes) -> tuple[Tensor, Tensor]:
    """The target set of neural-process training, support ∪ query: ``x, y [T, S + Q, dim]``."""
    return (torch.cat([episodes.support_x, episodes.query_x], dim=1),
            torch.cat([episodes.support_y, episodes.query_y], dim=1))


def check_regression_shapes(x: Tensor, y: Tensor, x_dim: int, y_dim: int) -> None:
    if x.dim() != 3 or y.dim() != 3 or x.shape[-1] != x_dim or y.shape[-1] != y_dim:
        raise ValueError(f"neural processes take x [T, N, {x_dim}] and y [T, N, {y_dim}] (regression "
                         f"episodes); got x {tuple(x.shape)} and y {tuple(y.shape)}")


def mean_aggregate(point_representations: Tensor) -> Tensor:
    """``[..., N, R] → [..., R]``: the permutation-invariant mean over the points of a set."""
    return point_representations.mean(dim=-2)


def gaussian_kl(mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
    """``KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))`` for diagonal Gaussians, summed over the last dim:

        sum_d log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2
    """
    return diagonal_gaussian_kl(mu_q, sigma_q.log(), mu_p, sigma_p.log()).sum(-1)


def gaussian_log_likelihood(y: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``log N(y; mean, std^2)`` summed over the last (output) dim."""
    return gaussian_log_density(y, mean, std).sum(-1)


class DeterministicEncoder(nn.Module):
    """``r_i = h([x_i, y_i])``: ``x [..., N, x_dim], y [..., N, y_dim] → r [..., N, hidden_sizes[-1]]``."""

    def __init__(self, x_dim: int, y_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.network = mlp(x_dim + y_dim, hidden_sizes[:-1], hidden_sizes[-1])
        self.representation_dim = hidden_sizes[-1]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.network(torch.cat([x, y], dim=-1))


class LatentEncoder(nn.Module):
    """``(x, y) → (mu, sigma)`` of the global latent ``q(z | x, y)``, each ``[..., latent_dim]``."""

    def __init__(self, x_dim: int, y_dim: int, hidden_sizes: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        width = hidden_sizes[-1]
        self.point_network = mlp(x_dim + y_dim, hidden_sizes[:-1], width)
        self.head = mlp(width, (width,), 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        pooled = mean_aggregate(self.point_network(torch.cat([x, y], dim=-1)))
        mu, raw_sigma = self.head(pooled).chunk(2, dim=-1)
        return mu, STD_FLOOR + (1 - STD_FLOOR) * torch.sigmoid(raw_sigma)


class Decoder(nn.Module):
    """``p(y | x, representation)``: ``[x, representation] → (mean, std)``, each ``[..., y_dim]``."""

    def __init__(self, x_dim: int, representation_dim: int, hidden_sizes: Sequence[int], y_dim: int) -> None:
        super().__init__()
        self.network = mlp(x_dim + representation_dim, hidden_sizes, 2 * y_dim)

    def forward(self, x: Tensor, representation: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw_std = self.network(torch.cat([x, representation], dim=-1)).chunk(2, dim=-1)
        return mean, STD_FLOOR + (1 - STD_FLOOR) * F.softplus(raw_std)


class MultiHeadCrossAttention(nn.Module):
    """Each target input attends to the context points: ``[T, Q, x_dim] × context → [T, Q, value_dim]``.

    Inputs are embedded by one shared MLP (``input_embedding``) before the per-head query and key
    projections; values are the deterministic representations ``r_i``. With ``num_heads`` heads
    of width ``value_dim / num_heads``.
    """

    def __init__(self, x_dim: int, value_dim: int, hidden_sizes: Sequence[int], num_heads: int = 8) -> None:
        super().__init__()
        if value_dim % num_heads:
            raise ValueError(f"the attention width {value_dim} (model.hidden_sizes[-1]) must be divisible "
                             f"by num_heads={num_heads}; choose a width that is a multiple of it")
        self.num_heads, self.head_dim = num_heads, value_dim // num_heads
        self.input_embedding = mlp(x_dim, hidden_sizes[:-1], value_dim)
        self.query_projection = nn.Linear(value_dim, value_dim, bias=False)
        self.key_projection = nn.Linear(value_dim, value_dim, bias=False)
        self.value_projection = nn.Linear(value_dim, value_dim, bias=False)
        self.output_projection = nn.Linear(value_dim, value_dim)

    def _split_heads(self, tensor: Tensor) -> Tensor:  # [T, N, H * D] → [T, H, N, D]
        return tensor.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def attention_weights(self, target_x: Tensor, context_x: Tensor) -> Tensor:
        """``[T, H, Q, C]``: per head, how much each target attends to each context point."""
        queries = self._split_heads(self.query_projection(self.input_embedding(target_x)))
        keys = self._split_heads(self.key_projection(self.input_embedding(context_x)))
        return torch.softmax(queries @ keys.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)

    def forward(self, target_x: Tensor, context_x: Tensor, context_values: Tensor) -> Tensor:
        weights = self.attention_weights(target_x, context_x)
        heads = weights @ self._split_heads(self.value_projection(context_values))  # [T, H, Q, D]
        return self.output_projection(heads.transpose(-3, -2).flatten(-2))
