"""Stein variational gradient descent (Liu & Wang, NeurIPS 2016) on stacked particles.

``particles`` is a parameter dict whose every tensor has a leading particle dimension ``M``
(particle ``m`` is ``{name: particles[name][m]}``); ``scores`` is the same dict holding
``grad log p(theta_m)`` for each particle. Distances between particles are taken over all the
tensors of the dict together, as if each particle were one flattened vector. One step is

    squared_distances[j, m] = sum over names of ||particles[j] - particles[m]||^2
    bandwidth = median(distances between distinct particles)^2 / log M        (detached)
    kernel[j, m] = exp(-squared_distances[j, m] / bandwidth)
    attraction[m] = sum_j kernel[j, m] * scores[j]
    repulsion[m]  = sum_j grad_{theta_j} kernel[j, m]
                  = (2 / bandwidth) * sum_j kernel[j, m] * (particles[m] - particles[j])
    direction[m]  = (attraction[m] + repulsion[m]) / M
    particles    <- particles + step_size * direction

With one particle the kernel is 1 and the repulsion 0, so a step is plain gradient ascent on
``log p``. :class:`SVGD` packages the step as an
:class:`~innerloop.functional.inner_optimizers.InnerOptimizer` over the *negative* log-density,
so :func:`~innerloop.functional.inner_loop.inner_loop` runs it (first or second order, with
checkpointing) exactly as it runs SGD; the kernel then covers the adapted parameters only.
Everything is plain tensor algebra, differentiable (the bandwidth excepted) and vmappable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.functional.params import Params

MIN_BANDWIDTH = 1e-8  # all particles identical: the kernel is 1 and the repulsion 0 whatever h is


def _flat(tensor: Tensor) -> Tensor:
    return tensor.reshape(tensor.shape[0], -1)


def _num_particles(particles: Params) -> int:
    if not particles:
        raise ValueError("SVGD needs at least one parameter tensor of stacked particles")
    counts = {int(tensor.shape[0]) for tensor in particles.values()}
    if len(counts) != 1:
        raise ValueError(f"every tensor must stack the same number of particles along dim 0, "
                         f"got {sorted(counts)}")
    return counts.pop()


def pairwise_squared_distances(particles: Params) -> Tensor:
    """``[M, M]``: squared Euclidean distances between the flattened particles.

    Written as differences (not ``|a|^2 + |b|^2 - 2ab``), so it is exact, never negative, and
    its derivative at a zero distance is zero (no square root is taken).
    """
    return sum((_flat(t).unsqueeze(1) - _flat(t).unsqueeze(0)).square().sum(-1)
               for t in particles.values())


def median_bandwidth(squared_distances: Tensor) -> Tensor:
    """The median heuristic ``h = median(||theta_j - theta_m||)^2 / log M`` (detached).

    The median is over the ``M (M - 1) / 2`` distinct pairs (mean of the two middle values for
    an even count). With one particle there is no pair and ``h`` is irrelevant: 1 is returned.
    """
    count = squared_distances.shape[-1]
    if count < 2:
        return squared_distances.new_ones(())
    rows, columns = torch.triu_indices(count, count, offset=1, device=squared_distances.device)
    distances = squared_distances.detach()[rows, columns].sqrt().sort().values
    pairs = distances.shape[-1]
    median = (distances[(pairs - 1) // 2] + distances[pairs // 2]) / 2
    return (median.square() / math.log(count)).clamp_min(MIN_BANDWIDTH)


def rbf_kernel(squared_distances: Tensor, bandwidth: Tensor | float) -> Tensor:
    """``kernel[j, m] = exp(-squared_distances[j, m] / bandwidth)`` (symmetric, ones on the diagonal)."""
    return torch.exp(-squared_distances / bandwidth)


def kernel_gradient_term(particles: Params, kernel: Tensor, bandwidth: Tensor | float) -> Params:
    """``(1/M) sum_j grad_{theta_j} k(theta_j, theta_m)`` for every particle ``m``: the repulsion.

    With ``k(a, b) = exp(-||a - b||^2 / h)``, ``grad_a k(a, b) = -(2/h) (a - b) k(a, b)``, so the
    sum is ``(2/h) (theta_m * sum_j kernel[j, m] - sum_j kernel[j, m] theta_j)``.
    """
    count = kernel.shape[0]
    weight_sums = kernel.sum(0)
    return {name: ((2.0 / bandwidth) * (_flat(t) * weight_sums.unsqueeze(1) - kernel.t() @ _flat(t)) / count)
            .reshape(t.shape) for name, t in particles.items()}


def svgd_direction(particles: Params, scores: Params, bandwidth: Tensor | float | None = None) -> Params:
    """The Stein variational direction ``phi(theta_m)`` for every particle (see the module docstring).

    Args:
        particles: stacked particles ``{name: [M, ...]}``.
        scores: ``{name: [M, ...]}``, the gradient of the log-density at each particle.
        bandwidth: the RBF bandwidth ``h``; ``None`` uses :func:`median_bandwidth`.
    """
    count = _num_particles(particles)
    missing = sorted(set(particles) - set(scores))
    if missing:
        raise KeyError(f"no score for {missing[0]!r}: give scores for every particle tensor")
    squared_distances = pairwise_squared_distances(particles)
    if bandwidth is None:
        bandwidth = median_bandwidth(squared_distances)
    kernel = rbf_kernel(squared_distances, bandwidth)
    repulsion = kernel_gradient_term(particles, kernel, bandwidth)
    return {name: (kernel.t() @ _flat(scores[name]) / count).reshape(t.shape) + repulsion[name]
            for name, t in particles.items()}


def svgd_step(particles: Params, scores: Params, step_size: float | Tensor,
              bandwidth: Tensor | float | None = None) -> Params:
    """``particles + step_size * svgd_direction(particles, scores, bandwidth)``."""
    direction = svgd_direction(particles, scores, bandwidth)
    return {name: t + step_size * direction[name] for name, t in particles.items()}


@dataclass(frozen=True)
class SVGD:
    """SVGD as an inner optimizer of a *loss* ``-sum_m log p(theta_m)`` over stacked particles.

    The gradient of that loss with respect to particle ``m`` is ``-score(theta_m)`` (particles
    enter the sum independently), so ``update`` negates it and takes one :func:`svgd_step`.
    ``lr`` is the step size; ``bandwidth`` ``None`` means the median heuristic at every step.
    """

    lr: float | Tensor
    bandwidth: float | None = None

    def init(self, params: Params) -> tuple[()]:
        _num_particles(params)
        return ()

    def update(self, grads: Params, state: tuple[()], params: Params) -> tuple[Params, tuple[()]]:
        scores = {name: -grad for name, grad in grads.items()}
        return svgd_step(params, scores, self.lr, self.bandwidth), state
