"""Implicit differentiation and iMAML against closed forms on quadratic inner problems (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from innerloop.algorithms import iMAML
from innerloop.functional import conjugate_gradient, implicit_gradient
from innerloop.tasks.episodes import Episodes


def spd_matrix(size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(size, size, generator=generator, dtype=torch.float64)
    return factor @ factor.T / size + 0.1 * torch.eye(size, dtype=torch.float64)


def test_conjugate_gradient_solves_a_positive_definite_system_and_converges():
    matrix = spd_matrix(8)
    rhs = {"x": torch.arange(1.0, 9.0, dtype=torch.float64)}
    exact = torch.linalg.solve(matrix, rhs["x"])
    errors = []
    for iterations in (1, 2, 4, 8):
        solution = conjugate_gradient(lambda v: {"x": matrix @ v["x"]}, rhs, iterations)
        errors.append(float((solution["x"] - exact).norm()))
    assert errors[-1] < 1e-8 * float(exact.norm())
    assert all(later <= earlier * 1.0001 for earlier, later in zip(errors, errors[1:]))
    # Non-positive curvature stops the iteration (truncated CG); at the first step it returns rhs.
    torch.testing.assert_close(conjugate_gradient(lambda v: {"x": -v["x"]}, rhs, 3)["x"], rhs["x"])
    indefinite = torch.diag(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))
    partial = conjugate_gradient(lambda v: {"x": indefinite @ v["x"]},
                                 {"x": torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}, 5)
    torch.testing.assert_close(partial["x"], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_implicit_gradient_equals_the_closed_form_and_converges_with_cg_steps():
    size, strength = 6, 2.0
    hessian = spd_matrix(size, seed=1)
    linear = torch.randn(size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def inner_loss(params):
        w = params["w"]
        return 0.5 * w @ hessian @ w - linear @ w

    solution = {"w": torch.randn(size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)}
    outer = {"w": torch.randn(size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)}
    exact = torch.linalg.solve(torch.eye(size, dtype=torch.float64) + hessian / strength, outer["w"])
    errors = [float((implicit_gradient(inner_loss, solution, outer, strength, k)["w"] - exact).norm())
              for k in (1, 2, 3, size)]
    assert errors[-1] < 1e-10 and errors[0] > 1e-3
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    with pytest.raises(KeyError, match="same parameters"):
        implicit_gradient(inner_loss, solution, {"v": outer["w"]}, strength, 2)
    damped = implicit_gradient(inner_loss, solution, outer, strength, size, damping=0.5)["w"]
    expected = torch.linalg.solve(torch.eye(size, dtype=torch.float64) + (hessian + 0.5 * torch.eye(size)) / strength,
                                  outer["w"])
    torch.testing.assert_close(damped, expected, rtol=1e-9, atol=1e-12)


class Features(nn.Module):
    """Fixed features (the identity): the head's inner problem is least squares, a quadratic."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.embedding_dim = size

    def forward(self, inputs):
        return inputs


def test_imaml_meta_gradient_equals_the_exact_implicit_gradient_of_ridge_regression():
    torch.manual_seed(0)
    features, strength, tasks = 3, 1.5, 2
    learner = iMAML(Features(features), 1, task="regression", inner_steps=400, inner_lr=0.1,
                    proximal_strength=strength, cg_steps=10).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(tasks, 16, features, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3
    episodes = Episodes(x[:, :8], y[:, :8], x[:, 8:], y[:, 8:], 1, 8, 8, torch.zeros(tasks, 1, dtype=torch.int64))
    loss, _ = learner.meta_loss(episodes)
    ours = torch.autograd.grad(loss, [learner.network.head.weight, learner.network.head.bias])
    ours = torch.cat([ours[0].flatten(), ours[1]])

    theta = torch.cat([learner.network.head.weight.detach().flatten(), learner.network.head.bias.detach()])
    expected = torch.zeros_like(theta)
    query_losses = []
    for t in range(tasks):
        design = torch.cat([x[t, :8], torch.ones(8, 1, dtype=torch.float64)], dim=1)
        query = torch.cat([x[t, 8:], torch.ones(8, 1, dtype=torch.float64)], dim=1)
        curvature = 2 / 8 * design.T @ design  # Hessian of the support MSE
        system = curvature + strength * torch.eye(features + 1, dtype=torch.float64)
        solution = torch.linalg.solve(system, 2 / 8 * design.T @ y[t, :8, 0] + strength * theta)
        residual = query @ solution - y[t, 8:, 0]
        query_losses.append(float((residual ** 2).mean()))
        query_grad = 2 / 8 * query.T @ residual
        expected += strength * torch.linalg.solve(system, query_grad) / tasks  # d solution / d theta
    torch.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-9)
    assert float(loss.detach()) == pytest.approx(sum(query_losses) / tasks, rel=1e-7)


def test_imaml_keeps_no_graph_of_its_inner_steps():
    learner = iMAML(Features(3), 1, task="regression", inner_steps=5, inner_lr=0.1).double()
    x = torch.randn(1, 10, 3, dtype=torch.float64)
    episode = Episodes(x[:, :5], x[:, :5, :1], x[:, 5:], x[:, 5:, :1], 1, 5, 5, torch.zeros(1, 1, dtype=torch.int64))[0]
    state = learner.adapt(episode.support_x, episode.support_y, 1)
    assert all(p.grad_fn is None and not p.requires_grad for p in state.params.values())


def test_imaml_on_conv4_with_batch_norm_gives_the_query_loss_and_a_finite_gradient():
    from test_functional import make_episodes, make_learner

    learner = make_learner(iMAML, "task", inner_steps=3, proximal_strength=2.0, cg_steps=3)
    episodes = make_episodes()
    loss, metrics = learner.meta_loss(episodes)
    with torch.no_grad():
        plain = torch.stack([
            torch.nn.functional.cross_entropy(
                learner.predict(learner.adapt(episodes[t].support_x, episodes[t].support_y, 3), episodes[t].query_x),
                episodes[t].query_y) for t in range(episodes.num_tasks)]).mean()
    learner.train()
    assert float(loss.detach()) == pytest.approx(float(plain), rel=1e-9)
    grads = torch.autograd.grad(loss, list(learner.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads) and float(grads[0].abs().sum()) > 0
    assert 0.0 <= metrics["accuracy"] <= 1.0
