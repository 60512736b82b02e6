"""Predictive distributions: what a meta-learner believes about each query after adaptation.

Every learner answers ``predictive(episodes)`` with one of two shapes, which the uncertainty
metrics (:mod:`innerloop.evaluate.uncertainty`) and the plots consume:

* :class:`CategoricalPredictive` for classification: class probabilities ``[T, Q, ways]``.
  Methods that sample (VERSA, PLATIPUS, ensembles, particles) average the sampled probabilities,
  which is the Monte-Carlo estimate of the posterior predictive.
* :class:`GaussianMixturePredictive` for regression with one output: an equally weighted mixture
  of ``M`` Gaussians per query, ``means`` and ``stds`` ``[T, Q, M]``. ``M = 1`` is a single
  Gaussian (a conditional neural process, an exact GP); ``M > 1`` is what Monte-Carlo samples of
  a latent variable, particles or ensemble members give. The mixture's log-density and CDF are
  exact, so the Gaussian NLL and the coverage of central intervals are too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.functional.gaussians import gaussian_log_density

@dataclass(frozen=True)
class CategoricalPredictive:
    """Class probabilities ``probs [T, Q, ways]`` (each row sums to 1)."""

    probs: Tensor

    @classmethod
    def from_logits(cls, logits: Tensor) -> CategoricalPredictive:
        return cls(torch.softmax(logits.to(torch.float64), dim=-1))

    @classmethod
    def average(cls, sampled_logits: Tensor, dim: int = 0) -> CategoricalPredictive:
        """The mean of the softmax over samples along ``dim`` (MC posterior predictive)."""
        return cls(torch.softmax(sampled_logits.to(torch.float64), dim=-1).mean(dim))


@dataclass(frozen=True)
class GaussianMixturePredictive:
    """An equal-weight mixture of Gaussians per query: ``means``, ``stds`` ``[T, Q, M]``."""

    means: Tensor
    stds: Tensor

    def __post_init__(self) -> None:
        if self.means.shape != self.stds.shape:
            raise ValueError(f"means {tuple(self.means.shape)} and stds {tuple(self.stds.shape)} "
                             f"must have the same shape [T, Q, M]")

    @classmethod
    def gaussian(cls, mean: Tensor, std: Tensor) -> GaussianMixturePredictive:
        """A single Gaussian per query from ``[T, Q]`` or ``[T, Q, 1]`` mean and std."""
        if mean.dim() == 2:
            mean, std = mean.unsqueeze(-1), std.unsqueeze(-1)
        return cls(mean.to(torch.float64), std.to(torch.float64).expand_as(mean))

    @classmethod
    def from_samples(cls, means: Tensor, stds: Tensor) -> GaussianMixturePredictive:
        """A mixture from samples along the first dimension: ``[M, T, Q]`` or ``[M, T, Q, 1]``."""
        if means.dim() == 4:
            means, stds = means.squeeze(-1), stds.squeeze(-1)
        stds = stds.expand_as(means)
        return cls(means.permute(1, 2, 0).to(torch.float64), stds.permute(1, 2, 0).to(torch.float64))

    @property
    def components(self) -> int:
        return int(self.means.shape[-1])

    @property
    def mean(self) -> Tensor:
        """The predictive mean ``[T, Q]``."""
        return self.means.mean(-1)

    @property
    def variance(self) -> Tensor:
        """The predictive variance ``[T, Q]`` (law of total variance over the components)."""
        return (self.stds.square() + self.means.square()).mean(-1) - self.mean.square()

    def log_prob(self, targets: Tensor) -> Tensor:
        """Log-density ``[T, Q]`` of ``targets`` (``[T, Q]`` or ``[T, Q, 1]``)."""
        component = gaussian_log_density(_flat_targets(targets).unsqueeze(-1), self.means, self.stds)
        return torch.logsumexp(component, dim=-1) - math.log(self.components)

    def cdf(self, targets: Tensor) -> Tensor:
        """Predictive CDF ``[T, Q]`` at ``targets`` (the probability integral transform)."""
        y = _flat_targets(targets).unsqueeze(-1)
        return torch.special.ndtr((y - self.means) / self.stds).mean(-1)

    def quantile(self, probability: float, iterations: int = 60) -> Tensor:
        """The ``probability`` quantile ``[T, Q]`` (bisection on the CDF; exact to ~1e-12 of
        the spread for M = 1 and M > 1 alike)."""
        if not 0 < probability < 1:
            raise ValueError(f"probability must be in (0, 1), got {probability}")
        spread = 10 * self.stds.max(-1).values
        low, high = self.means.min(-1).values - spread, self.means.max(-1).values + spread
        for _ in range(iterations):
            middle = (low + high) / 2
            below = self.cdf(middle) < probability
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return (low + high) / 2


Predictive = CategoricalPredictive | GaussianMixturePredictive


def _flat_targets(targets: Tensor) -> Tensor:
    if targets.dim() == 3:
        if targets.shape[-1] != 1:
            raise ValueError(f"regression predictives have one output; targets have {targets.shape[-1]}")
        targets = targets.squeeze(-1)
    return targets.to(torch.float64)
