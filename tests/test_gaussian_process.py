"""Exact GP posterior and marginal likelihood, the covariance functions, and Deep Kernel Transfer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from innerloop.algorithms.probabilistic.deep_kernel_transfer import DeepKernelTransfer
from innerloop.data.sinusoid import SinusoidSplit
from innerloop.functional.gaussian_process import (
    gp_log_marginal_likelihood,
    gp_posterior,
    jittered_cholesky,
)
from innerloop.functional.kernels import matern52_kernel, periodic_kernel, rbf_kernel
from innerloop.nn.mlp import MLP
from innerloop.tasks.regression import SinusoidTasks

TASKS, SUPPORT, QUERIES = 3, 5, 4


def random_problem(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random SPD kernel over ``SUPPORT + QUERIES`` points per task (float64)."""
    generator = torch.Generator().manual_seed(seed)
    points = SUPPORT + QUERIES
    factors = torch.randn(TASKS, points, points + 2, generator=generator, dtype=torch.float64)
    joint = factors @ factors.transpose(-1, -2) / points
    return {"train_kernel": joint[:, :SUPPORT, :SUPPORT], "cross_kernel": joint[:, SUPPORT:, :SUPPORT],
            "test_diag": joint[:, SUPPORT:, SUPPORT:].diagonal(dim1=-2, dim2=-1),
            "targets": torch.randn(TASKS, SUPPORT, generator=generator, dtype=torch.float64),
            "test_kernel": joint[:, SUPPORT:, SUPPORT:]}


def test_posterior_matches_a_dense_solve() -> None:
    problem = random_problem()
    noise, prior_mean = torch.tensor([0.1, 0.3, 0.05], dtype=torch.float64), 0.7
    mean, variance = gp_posterior(problem["train_kernel"], problem["cross_kernel"], problem["test_diag"],
                                  problem["targets"], noise, mean=prior_mean, jitter=0.0)
    covariance = problem["train_kernel"] + noise[:, None, None] * torch.eye(SUPPORT, dtype=torch.float64)
    cross = problem["cross_kernel"]
    solved = torch.linalg.solve(covariance, (problem["targets"] - prior_mean).unsqueeze(-1)).squeeze(-1)
    expected_mean = prior_mean + (cross @ solved.unsqueeze(-1)).squeeze(-1)
    expected_covariance = problem["test_kernel"] - cross @ torch.linalg.inv(covariance) @ cross.transpose(-1, -2)
    expected_variance = expected_covariance.diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(variance, expected_variance, rtol=1e-10, atol=1e-10)
    _, noisy = gp_posterior(problem["train_kernel"], cross, problem["test_diag"], problem["targets"], noise,
                            mean=prior_mean, include_noise=True, jitter=0.0)
    torch.testing.assert_close(noisy, expected_variance + noise[:, None], rtol=1e-10, atol=1e-10)
    # the default jitter (relative 1e-6) moves the answer by about that much only
    jittered, _ = gp_posterior(problem["train_kernel"], cross, problem["test_diag"], problem["targets"], noise,
                               mean=prior_mean)
    torch.testing.assert_close(jittered, expected_mean, rtol=1e-4, atol=1e-4)


def test_log_marginal_likelihood_matches_multivariate_normal() -> None:
    problem = random_problem(1)
    noise, prior_mean = 0.2, torch.tensor([0.0, -1.0, 2.0], dtype=torch.float64)
    covariance = problem["train_kernel"] + noise * torch.eye(SUPPORT, dtype=torch.float64)
    expected = torch.distributions.MultivariateNormal(
        prior_mean[:, None].expand(-1, SUPPORT), covariance).log_prob(problem["targets"])
    value = gp_log_marginal_likelihood(problem["train_kernel"], problem["targets"], noise, prior_mean, jitter=0.0)
    assert value.shape == (TASKS,)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)


def test_singular_kernel_gives_finite_results_through_jitter() -> None:
    # duplicated inputs with equal targets and no noise: K is exactly singular
    support_x = torch.tensor([[[0.0], [0.0], [1.0], [1.0], [2.5]]])
    support_y = torch.tensor([[0.3, 0.3, -1.0, -1.0, 0.5]])
    query_x = torch.tensor([[[0.5], [1.7]]])
    mean, variance = gp_posterior(rbf_kernel(support_x, support_x), rbf_kernel(query_x, support_x),
                                  torch.ones(1, 2), support_y, noise_variance=0.0)
    assert torch.isfinite(mean).all() and torch.isfinite(variance).all()
    # a noise-free GP conditioned on each distinct point once gives the same posterior
    unique = [0, 2, 4]
    reference_mean, reference_variance = gp_posterior(
        rbf_kernel(support_x[:, unique], support_x[:, unique]).double(),
        rbf_kernel(query_x, support_x[:, unique]).double(), torch.ones(1, 2, dtype=torch.float64),
        support_y[:, unique].double(), noise_variance=0.0, jitter=0.0)
    torch.testing.assert_close(mean.double(), reference_mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(variance.double(), reference_variance, atol=2e-3, rtol=0)
    # a matrix with a slightly negative eigenvalue fails without jitter; the retries find one
    indefinite = torch.ones(2, 4, 4, dtype=torch.float64) - 1e-9 * torch.eye(4, dtype=torch.float64)
    indefinite[1] = torch.eye(4, dtype=torch.float64)  # the healthy task keeps jitter 0
    factor, jitter = jittered_cholesky(indefinite, jitter=0.0)
    assert torch.isfinite(factor).all()
    assert 1e-9 / 4 < float(jitter[0]) < 1e-6 and float(jitter[1]) == 0.0
    with pytest.raises(torch.linalg.LinAlgError, match="positive definite"):
        jittered_cholesky(-torch.eye(3).expand(2, 3, 3), max_tries=3)


def test_marginal_likelihood_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(TASKS, SUPPORT, 2, generator=generator, dtype=torch.float64)
    targets = torch.randn(TASKS, SUPPORT, generator=generator, dtype=torch.float64)

    def objective(log_lengthscale: torch.Tensor, log_noise: torch.Tensor) -> torch.Tensor:
        kernel = matern52_kernel(inputs, inputs, log_lengthscale.exp(), 1.5)
        return gp_log_marginal_likelihood(kernel, targets, log_noise.exp(), jitter=0.0).sum()

    log_lengthscale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    log_noise = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    gradients = torch.autograd.grad(objective(log_lengthscale, log_noise), (log_lengthscale, log_noise))
    step = 1e-6
    with torch.no_grad():
        by_lengthscale = (objective(log_lengthscale + step, log_noise)
                          - objective(log_lengthscale - step, log_noise)) / (2 * step)
        by_noise = (objective(log_lengthscale, log_noise + step)
                    - objective(log_lengthscale, log_noise - step)) / (2 * step)
    torch.testing.assert_close(gradients[0], by_lengthscale, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(gradients[1], by_noise, rtol=1e-6, atol=1e-8)
    assert abs(float(gradients[0])) > 1e-3  # a gradient that could be wrong


def test_kernels_at_hand_computed_distances() -> None:
    origin = torch.zeros(1, 1, dtype=torch.float64)
    lengthscale, variance = 0.7, 2.0
    at = torch.tensor([[0.0], [lengthscale], [2 * lengthscale]], dtype=torch.float64)
    rbf = rbf_kernel(origin, at, lengthscale, variance).flatten()
    torch.testing.assert_close(rbf, variance * torch.tensor([1.0, math.exp(-0.5), math.exp(-2.0)],
                                                            dtype=torch.float64))
    matern = matern52_kernel(origin, at, lengthscale, variance).flatten()
    root5 = math.sqrt(5.0)
    expected = [1.0, (1 + root5 + 5 / 3) * math.exp(-root5), (1 + 2 * root5 + 20 / 3) * math.exp(-2 * root5)]
    torch.testing.assert_close(matern, variance * torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    period = 1.3
    points = torch.tensor([[0.0], [period / 4], [period / 2], [period]], dtype=torch.float64)
    periodic = periodic_kernel(origin, points, lengthscale, variance, period).flatten()
    expected = [1.0, math.exp(-2 * 0.5 / lengthscale**2), math.exp(-2 / lengthscale**2), 1.0]
    torch.testing.assert_close(periodic, variance * torch.tensor(expected, dtype=torch.float64))
    # 2-D inputs: r is the Euclidean distance (a 3-4-5 triangle)
    corner = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(rbf_kernel(torch.zeros(1, 2, dtype=torch.float64), corner, 5.0).flatten(),
                               torch.tensor([math.exp(-0.5)], dtype=torch.float64))


@pytest.mark.parametrize("kernel", [rbf_kernel, matern52_kernel, periodic_kernel])
def test_kernel_gram_matrices_are_symmetric_and_positive_semidefinite(kernel) -> None:
    generator = torch.Generator().manual_seed(3)
    inputs = 3 * torch.rand(2, 30, 1, generator=generator, dtype=torch.float64)  # periodic: PSD in 1-D
    lengthscale = torch.tensor([0.5, 1.5], dtype=torch.float64)  # one per task
    gram = kernel(inputs, inputs, lengthscale, 1.2)
    torch.testing.assert_close(gram, gram.transpose(-1, -2))
    assert float(torch.linalg.eigvalsh(gram).min()) >= -1e-8
    torch.testing.assert_close(gram.diagonal(dim1=-2, dim2=-1), torch.full((2, 30), 1.2, dtype=torch.float64))


def sinusoid_episodes(num_tasks: int, seed: int, shots: int = 10, queries: int = 10):
    return SinusoidTasks(SinusoidSplit("train"), shots=shots, queries=queries).sample(
        num_tasks, torch.Generator().manual_seed(seed))


def test_dkt_with_identity_features_is_exact_gp_regression() -> None:
    learner = DeepKernelTransfer(nn.Identity(), kernel="rbf", initial_lengthscale=0.8,
                                 initial_signal_variance=2.5, initial_noise_variance=0.05).double()
    with torch.no_grad():
        learner.prior_mean.fill_(0.4)
    episodes = sinusoid_episodes(3, seed=4, shots=6, queries=5)
    episodes = type(episodes)(*(t.double() if t.is_floating_point() else t for t in (
        episodes.support_x, episodes.support_y, episodes.query_x, episodes.query_y)),
        episodes.ways, episodes.shots, episodes.queries, episodes.class_ids)
    support_x, query_x = episodes.support_x, episodes.query_x
    noise = float(learner.noise_variance.detach())
    torch.testing.assert_close(noise, 0.05)
    mean, variance = gp_posterior(rbf_kernel(support_x, support_x, 0.8, 2.5), rbf_kernel(query_x, support_x, 0.8, 2.5),
                                  torch.full((3, 5), 2.5, dtype=torch.float64), episodes.support_y.squeeze(-1),
                                  noise, mean=0.4, include_noise=True)
    predictive = learner.predictive(episodes)
    torch.testing.assert_close(predictive.mean, mean)
    torch.testing.assert_close(predictive.variance, variance)
    # the single-task adapt/predict path gives the same means
    one = learner.predict(learner.adapt(support_x[1], episodes.support_y[1], 1), query_x[1])
    torch.testing.assert_close(one.flatten(), mean[1])
    # the loss: marginal likelihood of support ∪ query, per point, averaged over tasks
    all_x = torch.cat([support_x, query_x], 1)
    all_y = torch.cat([episodes.support_y, episodes.query_y], 1).squeeze(-1)
    covariance = rbf_kernel(all_x, all_x, 0.8, 2.5) + noise * torch.eye(11, dtype=torch.float64)
    log_prob = torch.distributions.MultivariateNormal(torch.full_like(all_y, 0.4), covariance).log_prob(all_y)
    loss, metrics = learner.meta_loss(episodes)
    torch.testing.assert_close(loss, -(log_prob / 11).mean(), rtol=1e-5, atol=1e-6)
    query_y = episodes.query_y.squeeze(-1)
    assert metrics["mse"] == pytest.approx(float((mean - query_y).square().mean()), rel=1e-6)
    assert metrics["nll"] == pytest.approx(float(-predictive.log_prob(query_y).mean().detach()), rel=1e-6)
    loss.backward()
    for parameter in (learner.log_lengthscale, learner.log_signal_variance, learner.log_noise_variance,
                      learner.prior_mean):
        assert parameter.grad is not None and torch.isfinite(parameter.grad) and parameter.grad != 0


def test_dkt_training_lowers_held_out_query_nll() -> None:
    torch.manual_seed(0)
    learner = DeepKernelTransfer(MLP(1, (40, 40)))  # rbf kernel
    assert learner.task_kinds == ("regression",) and learner.metric_name == "mse"
    held_out = SinusoidTasks(SinusoidSplit("val"), shots=10, queries=10).sample(
        50, torch.Generator().manual_seed(123))

    def held_out_scores() -> tuple[float, float]:
        with torch.no_grad():
            nll = -learner.predictive(held_out).log_prob(held_out.query_y).mean()
            return float(nll), float(learner.episode_metric(held_out).mean())

    nll_before, mse_before = held_out_scores()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    tasks = SinusoidTasks(SinusoidSplit("train"), shots=10, queries=10)
    generator = torch.Generator().manual_seed(5)
    for _ in range(200):
        loss, _ = learner.meta_loss(tasks.sample(10, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    nll_after, mse_after = held_out_scores()
    assert nll_after < nll_before - 0.5, (nll_before, nll_after)  # measured 0.70 -> -0.38
    assert mse_after < 0.7 * mse_before, (mse_before, mse_after)  # measured 0.51 -> 0.18
