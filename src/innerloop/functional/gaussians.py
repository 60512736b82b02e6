"""Closed forms for diagonal Gaussians, elementwise, shared by the probabilistic methods.

    gaussian_log_density(y, mean, std) = -(y - mean)^2 / (2 std^2) - log std - log(2 pi) / 2
    diagonal_gaussian_kl(mean_q, log_std_q, mean_p, log_std_p)
        = log_std_p - log_std_q + (exp(2 log_std_q) + (mean_q - mean_p)^2) / (2 exp(2 log_std_p)) - 1/2

Both return one value per entry; callers sum over the dimensions their model defines. The KL
takes log standard deviations, so it stays exact for standard deviations far below float
resolution (PLATIPUS's MAML limit uses ``exp(-80)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(targets: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``log N(targets; mean, std^2)`` per entry (broadcast)."""
    return -0.5 * ((targets - mean) / std).square() - std.log() - 0.5 * LOG_2PI


def diagonal_gaussian_kl(mean_q: Tensor, log_std_q: Tensor, mean_p: Tensor | float,
                         log_std_p: Tensor | float) -> Tensor:
    """``KL(N(mean_q, exp(log_std_q)^2) || N(mean_p, exp(log_std_p)^2))`` per entry."""
    log_std_p = torch.as_tensor(log_std_p, dtype=log_std_q.dtype, device=log_std_q.device)
    ratio = torch.exp(2 * (log_std_q - log_std_p)) + (mean_q - mean_p) ** 2 * torch.exp(-2 * log_std_p)
    return log_std_p - log_std_q + 0.5 * ratio - 0.5
