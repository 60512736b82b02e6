"""Exact Gaussian-process regression, batched over tasks: the posterior and the marginal likelihood.

For one task with training kernel ``K = train_kernel [S, S]``, cross kernel
``K* = cross_kernel [Q, S]`` (test points against training points), prior variances of the test
points ``k** = test_diag [Q]``, targets ``y [S]``, observation noise ``noise_variance`` and a
constant prior ``mean`` (Rasmussen & Williams 2006, Algorithm 2.1):

    L = cholesky(K + (noise_variance + jitter) I)
    alpha = cholesky_solve(y - mean, L)                  # (K + noise_variance I)^{-1} (y - mean)
    posterior mean = mean + K* alpha
    v = solve_triangular(L, K*^T)                        # L^{-1} K*^T, [S, Q]
    posterior variance = k** - sum_s v[s, q]^2           # of the latent f; + noise_variance for y
    log p(y) = -1/2 (y - mean)^T alpha - sum(log diag L) - (S / 2) log 2 pi

Every function takes a leading task dimension ``T`` (one factorization per task in one batched
call) and is differentiable with respect to the kernel matrices, the noise and the mean, so a
kernel's hyperparameters and a feature extractor under it can be learned by backpropagation.

``jitter`` is relative to the mean diagonal of ``K + noise_variance I``. When the Cholesky
factorization of a task fails (a singular kernel: duplicated inputs and no noise, or round-off),
that task's jitter grows tenfold and it is factored again (:func:`jittered_cholesky`).

Why not GPyTorch: the exact posterior of a support set of a few dozen points needs ~40 lines of
``torch.linalg``; written here it is batched over the tasks of a meta-batch (GPyTorch's
``ExactGP`` conditions on one training set at a time), differentiable end to end, and adds no
dependency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

DEFAULT_JITTER = 1e-6  # relative to the mean diagonal of K + noise I
MAX_CHOLESKY_TRIES = 10


def jittered_cholesky(matrix: Tensor, jitter: float = DEFAULT_JITTER,
                      max_tries: int = MAX_CHOLESKY_TRIES) -> tuple[Tensor, Tensor]:
    """Lower Cholesky factor of ``matrix + jitter_t * scale_t * I`` for each matrix ``[..., S, S]``.

    ``scale_t`` is the mean diagonal of matrix ``t``. A matrix whose factorization fails is
    retried with ten times its jitter (at least ``100 * eps`` of the dtype when ``jitter`` is 0);
    the others keep theirs, so a task's result never depends on the other tasks. Returns the
    factor and the relative jitter each matrix received (``[...]``).
    """
    size = matrix.shape[-1]
    identity = torch.eye(size, dtype=matrix.dtype, device=matrix.device)
    scale = matrix.detach().diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(torch.finfo(matrix.dtype).tiny)
    relative = torch.full(matrix.shape[:-2], jitter, dtype=matrix.dtype, device=matrix.device)
    smallest_retry = 100 * torch.finfo(matrix.dtype).eps
    for _ in range(max_tries):
        factor, info = torch.linalg.cholesky_ex(matrix + (relative * scale)[..., None, None] * identity)
        failed = info != 0
        if not bool(failed.any()):
            return factor, relative
        relative = torch.where(failed, (relative * 10).clamp_min(smallest_retry), relative)
    raise torch.linalg.LinAlgError(
        f"the kernel matrix is not positive definite even with a relative jitter of "
        f"{float(relative.max()):.1e}: check it for NaN or infinite entries, add observation noise, "
        f"or compute in float64")


def _as_batch(value: Tensor | float, like: Tensor) -> Tensor:
    """A scalar or per-task ``[T]`` value as a tensor of ``like``'s dtype and device."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


@dataclass(frozen=True)
class GaussianProcessPosterior:
    """A GP conditioned on each task's training set: what the test-time predictions need."""

    cholesky: Tensor  # L [T, S, S]
    alpha: Tensor  # (K + noise I)^{-1} (y - mean) [T, S]
    mean: Tensor  # the prior mean, scalar or [T]
    noise_variance: Tensor  # scalar or [T]

    def predict(self, cross_kernel: Tensor, test_diag: Tensor,
                include_noise: bool = False) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance ``[T, Q]`` at the test points: of the latent function, or
        with ``include_noise`` of a noisy observation ``y`` there (variance + noise_variance)."""
        mean = self.mean[..., None] + (cross_kernel @ self.alpha.unsqueeze(-1)).squeeze(-1)
        whitened = torch.linalg.solve_triangular(self.cholesky, cross_kernel.transpose(-1, -2), upper=False)
        variance = (test_diag - whitened.square().sum(-2)).clamp_min(0.0)  # round-off can go below 0
        if include_noise:
            variance = variance + self.noise_variance[..., None]
        return mean, variance


def gp_condition(train_kernel: Tensor, targets: Tensor, noise_variance: Tensor | float,
                 mean: Tensor | float = 0.0, jitter: float = DEFAULT_JITTER) -> GaussianProcessPosterior:
    """Factor ``K + noise I`` and solve for ``alpha``: ``train_kernel [T, S, S]``, ``targets [T, S]``."""
    noise_variance, mean = _as_batch(noise_variance, train_kernel), _as_batch(mean, train_kernel)
    if train_kernel.shape[-1] != targets.shape[-1]:
        raise ValueError(f"train_kernel {tuple(train_kernel.shape)} and targets {tuple(targets.shape)} "
                         f"must describe the same S training points")
    identity = torch.eye(train_kernel.shape[-1], dtype=train_kernel.dtype, device=train_kernel.device)
    factor, _ = jittered_cholesky(train_kernel + noise_variance[..., None, None] * identity, jitter)
    alpha = torch.cholesky_solve((targets - mean[..., None]).unsqueeze(-1), factor).squeeze(-1)
    return GaussianProcessPosterior(factor, alpha, mean, noise_variance)


def gp_posterior(train_kernel: Tensor, cross_kernel: Tensor, test_diag: Tensor, targets: Tensor,
                 noise_variance: Tensor | float, mean: Tensor | float = 0.0, include_noise: bool = False,
                 jitter: float = DEFAULT_JITTER) -> tuple[Tensor, Tensor]:
    """Posterior mean and variance ``[T, Q]`` of the latent function at the test points
    (``include_noise=True``: the predictive of ``y``, variance + noise_variance).

    Shapes: ``train_kernel [T, S, S]``, ``cross_kernel [T, Q, S]``, ``test_diag [T, Q]``,
    ``targets [T, S]``; ``noise_variance`` and ``mean`` are scalars or ``[T]``.
    """
    posterior = gp_condition(train_kernel, targets, noise_variance, mean, jitter)
    return posterior.predict(cross_kernel, test_diag, include_noise)


def gp_log_marginal_likelihood(train_kernel: Tensor, targets: Tensor, noise_variance: Tensor | float,
                               mean: Tensor | float = 0.0, jitter: float = DEFAULT_JITTER) -> Tensor:
    """``log N(targets; mean, K + noise I)`` of each task, ``[T]`` (not divided by ``S``)."""
    posterior = gp_condition(train_kernel, targets, noise_variance, mean, jitter)
    centred = targets - posterior.mean[..., None]
    data_fit = -0.5 * (centred * posterior.alpha).sum(-1)
    log_determinant_half = posterior.cholesky.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return data_fit - log_determinant_half - 0.5 * targets.shape[-1] * math.log(2 * math.pi)
