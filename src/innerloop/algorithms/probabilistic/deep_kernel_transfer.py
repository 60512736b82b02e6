"""Deep Kernel Transfer (Patacchiola, Turner, Crowley, O'Boyle & Storkey, NeurIPS 2020,
"Bayesian Meta-Learning for the Few-Shot Setting via Deep Kernels").

A Gaussian process whose kernel runs on learned features, shared by all tasks:

    features = backbone(x)
    K = kernel(features, features', lengthscale, signal_variance)     # rbf or matern52
    y = f(x) + noise,   f ~ GP(prior_mean, K),   noise ~ N(0, noise_variance)

with ``lengthscale = exp(log_lengthscale)``, ``signal_variance = exp(log_signal_variance)`` and
``noise_variance = MIN_NOISE_VARIANCE + exp(log_noise_variance)``; the prior mean is a learned
constant ``prior_mean`` (the paper's GPyTorch ``ConstantMean``; ``learn_mean=False`` fixes it at 0).

Outer loop (type-II maximum likelihood across tasks): for each task take all its points, support
and query together as the paper does, ``x_t``, ``y_t`` (``N = S + Q`` of them), and minimise

    loss = -mean_t gp_log_marginal_likelihood(K(x_t, x_t), y_t, noise_variance, prior_mean) / N

with respect to the backbone and the kernel, noise and mean parameters (per point, as GPyTorch's
``ExactMarginalLogLikelihood`` divides by the number of points, so the learning rate does not
depend on the task size).

Inner loop (test time, no gradient steps): the exact GP posterior given the support set,
``gp_condition(K(support, support), support_y, ...)``, and for each query the predictive

    y_q ~ N(posterior mean, posterior variance + noise_variance)

returned as a single Gaussian (:meth:`GaussianMixturePredictive.gaussian`). Regression only. Not
transductive: the predictive variances are the marginals, one query never affects another.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import GaussianMixturePredictive, Predictive
from innerloop.functional.gaussians import gaussian_log_density
from innerloop.functional.gaussian_process import GaussianProcessPosterior, gp_condition, gp_log_marginal_likelihood
from innerloop.functional.kernels import KERNELS
from innerloop.tasks.episodes import Episodes

DKT_KERNELS = ("rbf", "matern52")  # the periodic kernel on a multi-dimensional feature norm is not PSD
MIN_NOISE_VARIANCE = 1e-4  # GPyTorch's default noise floor: keeps K + noise I well conditioned in float32


class DeepKernelTransfer(MetaLearner):
    """An exact GP on backbone features, with the kernel and features meta-learned by the
    marginal likelihood of whole tasks."""

    name = "dkt"
    task_kinds = ("regression",)
    metric_name = "mse"
    higher_is_better = False
    adaptation = "one forward pass of the support set and one S x S Cholesky factorization"

    def __init__(self, backbone: nn.Module, kernel: str = "rbf", initial_lengthscale: float = 1.0,
                 initial_signal_variance: float = 1.0, initial_noise_variance: float = 0.1,
                 learn_mean: bool = True) -> None:
        super().__init__()
        if kernel not in DKT_KERNELS:
            raise ValueError(f"DKT's kernel (config.model.kernel) must be one of {', '.join(DKT_KERNELS)}, "
                             f"got {kernel!r}")
        if min(initial_lengthscale, initial_signal_variance) <= 0 or initial_noise_variance <= MIN_NOISE_VARIANCE:
            raise ValueError(f"initial lengthscale and signal variance must be > 0 and the initial noise "
                             f"variance > {MIN_NOISE_VARIANCE}")
        self.backbone = backbone
        self.kernel_name = kernel
        self.log_lengthscale = nn.Parameter(torch.tensor(math.log(initial_lengthscale)))
        self.log_signal_variance = nn.Parameter(torch.tensor(math.log(initial_signal_variance)))
        self.log_noise_variance = nn.Parameter(torch.tensor(math.log(initial_noise_variance - MIN_NOISE_VARIANCE)))
        self.prior_mean = nn.Parameter(torch.zeros(()), requires_grad=learn_mean)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> DeepKernelTransfer:
        return cls(backbone, kernel=config.model.kernel or "rbf")

    @property
    def noise_variance(self) -> Tensor:
        return MIN_NOISE_VARIANCE + self.log_noise_variance.exp()

    def kernel(self, features: Tensor, others: Tensor) -> Tensor:
        """The kernel matrix ``[..., N, M]`` between feature sets ``[..., N, D]`` and ``[..., M, D]``."""
        return KERNELS[self.kernel_name](features, others, self.log_lengthscale.exp(),
                                         self.log_signal_variance.exp())

    def features(self, inputs: Tensor) -> Tensor:
        """``backbone`` on every point of every task: ``[T, N, ...]`` → ``[T, N, D]``."""
        return self.backbone(inputs.flatten(0, 1)).unflatten(0, inputs.shape[:2])

    def _posterior(self, kernel: Tensor, support_y: Tensor) -> GaussianProcessPosterior:
        return gp_condition(kernel, support_y, self.noise_variance, self.prior_mean)

    def _diagonal(self, features: Tensor) -> Tensor:
        """The prior variances ``k(x, x)`` ``[..., N]`` of feature set ``[..., N, D]``."""
        return self.kernel(features.unsqueeze(-2), features.unsqueeze(-2)).flatten(-3)

    def _query_predictive(self, support: Tensor, query: Tensor, support_y: Tensor,
                          support_kernel: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance ``[T, Q]`` of ``y`` at the queries given the support, from
        support and query features ``[T, S, D]``, ``[T, Q, D]`` (the Q x Q block is never formed)."""
        if support_kernel is None:
            support_kernel = self.kernel(support, support)
        posterior = self._posterior(support_kernel, support_y)
        return posterior.predict(self.kernel(query, support), self._diagonal(query), include_noise=True)

    # -- the MetaLearner contract -------------------------------------------------------------
    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int = 1) -> tuple[Tensor, GaussianProcessPosterior]:
        """One task: its support features and the GP conditioned on them."""
        support = self.backbone(support_x)
        return support, self._posterior(self.kernel(support, support)[None], support_y.reshape(1, -1))

    def predict(self, state: tuple[Tensor, GaussianProcessPosterior], query_x: Tensor) -> Tensor:
        """The posterior mean ``[Q, 1]`` at the queries of the task ``state`` was adapted to."""
        support, posterior = state
        query = self.backbone(query_x)
        mean, _ = posterior.predict(self.kernel(query, support)[None], self._diagonal(query)[None])
        return mean.reshape(-1, 1)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Negative log marginal likelihood per point of each task's support ∪ query, averaged over
        tasks; metrics: the query MSE and NLL of the predictive given the support only."""
        inputs = torch.cat([episodes.support_x, episodes.query_x], dim=1)
        targets = torch.cat([episodes.support_y, episodes.query_y], dim=1).flatten(1)
        all_features = self.features(inputs)
        kernel = self.kernel(all_features, all_features)
        log_likelihood = gp_log_marginal_likelihood(kernel, targets, self.noise_variance, self.prior_mean)
        loss = -(log_likelihood / targets.shape[1]).mean()
        with torch.no_grad():
            shots = episodes.support_y.shape[1]
            mean, variance = self._query_predictive(all_features[:, :shots], all_features[:, shots:],
                                                    episodes.support_y.flatten(1), kernel[:, :shots, :shots])
            query_y = episodes.query_y.flatten(1)
            mse = (mean - query_y).square().mean()
            nll = -gaussian_log_density(query_y, mean, variance.sqrt()).mean()
        return loss, {"mse": float(mse), "nll": float(nll), "marginal_nll": float(loss.detach())}

    def predictive(self, episodes: Episodes) -> Predictive:
        """``N(posterior mean, posterior variance + noise_variance)`` for every query, given the support."""
        shots = episodes.support_y.shape[1]
        all_features = self.features(torch.cat([episodes.support_x, episodes.query_x], dim=1))
        mean, variance = self._query_predictive(all_features[:, :shots], all_features[:, shots:],
                                                episodes.support_y.flatten(1))
        return GaussianMixturePredictive.gaussian(mean, variance.sqrt())
