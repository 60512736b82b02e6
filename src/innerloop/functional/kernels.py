"""Covariance functions for Gaussian processes, batched over tasks.

Inputs are ``[..., N, D]`` and ``[..., M, D]``; hyperparameters are tensors (or floats) that
broadcast against the leading ``...`` dimensions, so one call evaluates the kernels of a whole
batch of tasks, each with its own hyperparameters. The result is ``[..., N, M]``.

* RBF: ``variance * exp(-r^2 / (2 lengthscale^2))``
* Matérn-5/2: ``variance * (1 + sqrt(5) s + 5 s^2 / 3) exp(-sqrt(5) s)`` with ``s = r / lengthscale``
* periodic (MacKay 1998; Rasmussen & Williams 2006, eq. 4.31):
  ``variance * exp(-2 sin^2(pi r / period) / lengthscale^2)``

where ``r = ||x - x'||``. Used by the GP regression task family (:mod:`innerloop.tasks.gp_functions`)
and by deep kernel transfer, whose kernel runs on learned features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# Below this squared distance the Euclidean distance is treated as sqrt(MIN_SQUARED_DISTANCE):
# keeps d r / d x finite at r = 0 (the kernels' values there are unaffected to ~1e-6 relative).
MIN_SQUARED_DISTANCE = 1e-12


def squared_distances(inputs: Tensor, others: Tensor) -> Tensor:
    """``||inputs_i - others_j||^2`` as ``[..., N, M]`` (exact differences, never negative)."""
    return (inputs.unsqueeze(-2) - others.unsqueeze(-3)).square().sum(-1)


def _hyper(value: Tensor | float, like: Tensor) -> Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value[..., None, None]


def rbf_kernel(inputs: Tensor, others: Tensor, lengthscale: Tensor | float = 1.0,
               variance: Tensor | float = 1.0) -> Tensor:
    """The squared-exponential kernel."""
    scaled = squared_distances(inputs, others) / _hyper(lengthscale, inputs).square()
    return _hyper(variance, inputs) * torch.exp(-0.5 * scaled)


def matern52_kernel(inputs: Tensor, others: Tensor, lengthscale: Tensor | float = 1.0,
                    variance: Tensor | float = 1.0) -> Tensor:
    """The Matérn kernel with smoothness 5/2 (twice differentiable sample paths)."""
    distance = squared_distances(inputs, others).clamp_min(MIN_SQUARED_DISTANCE).sqrt()
    scaled = math.sqrt(5.0) * distance / _hyper(lengthscale, inputs)
    return _hyper(variance, inputs) * (1.0 + scaled + scaled.square() / 3.0) * torch.exp(-scaled)


def periodic_kernel(inputs: Tensor, others: Tensor, lengthscale: Tensor | float = 1.0,
                    variance: Tensor | float = 1.0, period: Tensor | float = 1.0) -> Tensor:
    """The exp-sine-squared kernel: functions that repeat every ``period``."""
    distance = squared_distances(inputs, others).clamp_min(MIN_SQUARED_DISTANCE).sqrt()
    sine = torch.sin(math.pi * distance / _hyper(period, inputs))
    return _hyper(variance, inputs) * torch.exp(-2.0 * sine.square() / _hyper(lengthscale, inputs).square())


KERNELS: dict[str, Callable[..., Tensor]] = {
    "rbf": rbf_kernel,
    "matern52": matern52_kernel,
    "periodic": periodic_kernel,
}
