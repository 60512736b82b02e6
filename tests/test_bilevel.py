"""Hyper-gradients of every mode against closed forms and finite differences (innerloop.bilevel)."""

from __future__ import annotations

import pytest
import torch

from innerloop.bilevel import (
    BilevelProblem,
    ForwardMode,
    GradientDescent,
    ImplicitCG,
    ImplicitNeumann,
    Unrolled,
    hypergradient,
    hyperparameter_descent,
)
from innerloop.bilevel.learning_to_reweight import example_weights
from innerloop.errors import ConfigError
from innerloop.functional import SGD, MomentumSGD

DOUBLE = torch.float64


def ridge_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    train_x = torch.randn(12, 4, generator=generator, dtype=DOUBLE)
    true_w = torch.tensor([1.0, -2.0, 0.0, 0.5], dtype=DOUBLE)
    train_y = train_x @ true_w + 2.0 * torch.randn(12, generator=generator, dtype=DOUBLE)
    val_x = torch.randn(16, 4, generator=generator, dtype=DOUBLE)
    val_y = val_x @ true_w + 2.0 * torch.randn(16, generator=generator, dtype=DOUBLE)
    return train_x, train_y, val_x, val_y


def ridge_problem(steps: int = 600) -> tuple[BilevelProblem, dict, dict, callable]:
    """Ridge regression with one L2 strength per weight, ``exp(log_l2)``; its closed form."""
    train_x, train_y, val_x, val_y = ridge_data()

    def inner(w, h):
        return ((train_x @ w["w"] - train_y) ** 2).mean() + (torch.exp(h["log_l2"]) * w["w"] ** 2).sum()

    def outer(w, h):
        return ((val_x @ w["w"] - val_y) ** 2).mean()

    def closed_form_validation_loss(log_l2):
        system = train_x.T @ train_x / len(train_y) + torch.diag(torch.exp(log_l2))
        solution = torch.linalg.solve(system, train_x.T @ train_y / len(train_y))
        return ((val_x @ solution - val_y) ** 2).mean()

    problem = BilevelProblem(inner, outer, GradientDescent(steps, SGD(0.2)))
    weights = {"w": torch.zeros(4, dtype=DOUBLE)}
    hyper = {"log_l2": torch.tensor([-1.0, -0.5, -2.0, 0.3], dtype=DOUBLE)}
    return problem, weights, hyper, closed_form_validation_loss


@pytest.mark.parametrize("method", [Unrolled(), Unrolled(truncate=200), ImplicitCG(iterations=10),
                                    ImplicitNeumann(terms=300, step_size=0.3), ForwardMode(chunk_size=3)],
                         ids=["unrolled", "truncated", "implicit-cg", "implicit-neumann", "forward"])
def test_every_mode_matches_the_ridge_closed_form(method):
    problem, weights, hyper, closed_form = ridge_problem()
    expected = torch.func.grad(closed_form)(hyper["log_l2"])
    result = hypergradient(problem, weights, hyper, method)
    assert result.inner_gradient_norm < 1e-10
    torch.testing.assert_close(result.gradient["log_l2"], expected, rtol=1e-6, atol=1e-10)
    assert result.outer_loss == pytest.approx(float(closed_form(hyper["log_l2"])), rel=1e-9)
    assert expected.abs().min() > 1e-4  # the check is not vacuous


def tiny_network_problem(steps: int) -> tuple[BilevelProblem, dict, dict]:
    """A non-convex two-layer tanh regression; hyperparameters: log learning rate, momentum logit,
    and a per-unit L2 strength that also enters the outer loss (a direct term)."""
    generator = torch.Generator().manual_seed(1)
    train_x, val_x = torch.randn(12, 3, generator=generator, dtype=DOUBLE), torch.randn(9, 3, generator=generator, dtype=DOUBLE)
    train_y, val_y = torch.sin(train_x.sum(1)), torch.sin(val_x.sum(1))

    def predict(w, x):
        return torch.tanh(x @ w["first"]) @ w["second"]

    def inner(w, h):
        return ((predict(w, train_x) - train_y) ** 2).mean() + (torch.exp(h["log_l2"]) * w["second"] ** 2).sum()

    def outer(w, h):
        return ((predict(w, val_x) - val_y) ** 2).mean() + 0.01 * torch.exp(h["log_l2"]).sum()

    solver = GradientDescent(steps, lambda h: MomentumSGD(torch.exp(h["log_lr"]), torch.sigmoid(h["momentum_logit"])))
    weights = {"first": 0.5 * torch.randn(3, 5, generator=generator, dtype=DOUBLE),
               "second": 0.5 * torch.randn(5, generator=generator, dtype=DOUBLE)}
    hyper = {"log_lr": torch.tensor(-2.0, dtype=DOUBLE), "momentum_logit": torch.tensor(0.5, dtype=DOUBLE),
             "log_l2": torch.tensor([-3.0, -2.0, -1.0, -2.5, -1.5], dtype=DOUBLE)}
    return BilevelProblem(inner, outer, solver), weights, hyper


def finite_difference(function, hyper: dict, epsilon: float = 1e-6) -> dict:
    gradient = {}
    for name, value in hyper.items():
        flat = torch.zeros(value.numel(), dtype=DOUBLE)
        for index in range(value.numel()):
            shift = torch.zeros(value.numel(), dtype=DOUBLE)
            shift[index] = epsilon
            plus = dict(hyper, **{name: value + shift.reshape(value.shape)})
            minus = dict(hyper, **{name: value - shift.reshape(value.shape)})
            flat[index] = (function(plus) - function(minus)) / (2 * epsilon)
        gradient[name] = flat.reshape(value.shape)
    return gradient


@pytest.mark.parametrize("method", [Unrolled(), ForwardMode(chunk_size=2)], ids=["unrolled", "forward"])
def test_unrolled_and_forward_mode_match_finite_differences_through_momentum(method):
    problem, weights, hyper = tiny_network_problem(steps=15)

    def validation_after_training(h):
        solution, _ = problem.solver.run(problem.inner_loss, weights, h)
        return float(problem.outer_loss(solution, h))

    expected = finite_difference(validation_after_training, hyper)
    result = hypergradient(problem, weights, hyper, method)
    for name in hyper:
        torch.testing.assert_close(result.gradient[name], expected[name], rtol=1e-5, atol=1e-8)
    assert expected["log_lr"].abs() > 1e-4 and expected["momentum_logit"].abs() > 1e-5


def test_truncated_mode_is_the_gradient_of_the_last_steps_only():
    problem, weights, hyper = tiny_network_problem(steps=15)
    kept = 5
    with torch.no_grad():
        middle, state = problem.solver.run(problem.inner_loss, weights, hyper, steps=15 - kept)

    def last_steps_only(h):  # the first 10 steps see the hyperparameters as constants
        solution, _ = problem.solver.run(problem.inner_loss, middle, h, steps=kept, state=state)
        return float(problem.outer_loss(solution, h))

    expected = finite_difference(last_steps_only, hyper)
    truncated = hypergradient(problem, weights, hyper, Unrolled(truncate=kept)).gradient
    exact = hypergradient(problem, weights, hyper, Unrolled()).gradient
    for name in hyper:
        torch.testing.assert_close(truncated[name], expected[name], rtol=1e-5, atol=1e-8)
    assert not torch.allclose(truncated["log_lr"], exact["log_lr"], rtol=1e-2)  # truncation is a real bias
    full = hypergradient(problem, weights, hyper, Unrolled(truncate=15)).gradient
    torch.testing.assert_close(full["log_lr"], exact["log_lr"])


def logistic_problem() -> tuple[BilevelProblem, dict, dict]:
    """Strongly convex inner problem (L2-regularised 3-class logistic regression) solved to optimality."""
    generator = torch.Generator().manual_seed(2)
    train_x, val_x = torch.randn(30, 4, generator=generator, dtype=DOUBLE), torch.randn(20, 4, generator=generator, dtype=DOUBLE)
    mixing = torch.randn(4, 3, generator=generator, dtype=DOUBLE)
    train_y, val_y = (train_x @ mixing).argmax(1), (val_x @ mixing + 0.5).argmax(1)

    def inner(w, h):
        loss = torch.nn.functional.cross_entropy(train_x @ w["w"] + w["b"], train_y)
        return loss + 0.5 * (torch.exp(h["log_l2"]) * w["w"] ** 2).sum() + 0.005 * (w["b"] ** 2).sum()

    def outer(w, h):
        return torch.nn.functional.cross_entropy(val_x @ w["w"] + w["b"], val_y)

    weights = {"w": torch.zeros(4, 3, dtype=DOUBLE), "b": torch.zeros(3, dtype=DOUBLE)}
    hyper = {"log_l2": torch.full((4, 3), -1.0, dtype=DOUBLE)}
    return BilevelProblem(inner, outer, GradientDescent(1500, SGD(2.0))), weights, hyper


@pytest.mark.parametrize("method", [ImplicitCG(iterations=30), ImplicitNeumann(terms=400, step_size=0.5)],
                         ids=["cg", "neumann"])
def test_implicit_modes_match_finite_differences_of_the_optimum(method):
    problem, weights, hyper = logistic_problem()

    def validation_at_optimum(h):  # the optimum by Newton's method, independent of the library's solver
        flat = torch.zeros(15, dtype=DOUBLE)

        def unflat(vector):
            return {"w": vector[:12].reshape(4, 3), "b": vector[12:]}

        objective = lambda vector: problem.inner_loss(unflat(vector), h)  # noqa: E731
        for _ in range(12):
            flat = flat - torch.linalg.solve(torch.func.hessian(objective)(flat), torch.func.grad(objective)(flat))
        return float(problem.outer_loss(unflat(flat), h))

    expected = finite_difference(validation_at_optimum, hyper, epsilon=1e-5)
    result = hypergradient(problem, weights, hyper, method)
    assert result.inner_gradient_norm < 1e-8
    torch.testing.assert_close(result.gradient["log_l2"], expected["log_l2"], rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore:the implicit hyper-gradient solved")  # few terms: warned, on purpose
def test_neumann_series_converges_to_conjugate_gradient_with_more_terms():
    problem, weights, hyper, _ = ridge_problem()
    reference = hypergradient(problem, weights, hyper, ImplicitCG(10)).gradient["log_l2"]
    errors = [float((hypergradient(problem, weights, hyper, ImplicitNeumann(terms, 0.3)).gradient["log_l2"]
                     - reference).norm()) for terms in (0, 5, 50)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * errors[0]


def test_implicit_mode_refuses_hyperparameters_of_the_solver():
    problem, weights, hyper = tiny_network_problem(steps=3)
    with pytest.raises(ConfigError, match=r"\['log_lr', 'momentum_logit'\].*Unrolled\(\) or ForwardMode\(\)"):
        hypergradient(problem, weights, hyper, ImplicitCG())


def test_inputs_are_not_modified_and_bad_inputs_are_refused():
    problem, weights, hyper, _ = ridge_problem(steps=5)
    before = {name: value.clone() for name, value in {**weights, **hyper}.items()}
    hypergradient(problem, weights, hyper)
    for name, value in {**weights, **hyper}.items():
        assert torch.equal(value, before[name]) and not value.requires_grad
    with pytest.raises(ConfigError, match="truncate must be in 1..5"):
        hypergradient(problem, weights, hyper, Unrolled(truncate=6))
    with pytest.raises(ConfigError, match="floating-point"):
        hypergradient(problem, weights, {"log_l2": torch.tensor([1, 2])})
    with pytest.raises(ConfigError, match="hyperparameters is empty"):
        hypergradient(problem, weights, {})
    with pytest.raises(ConfigError, match="at least 1 step"):
        GradientDescent(0)


def test_hyperparameter_descent_reaches_the_best_regularizer_of_the_closed_form():
    problem, weights, _, closed_form = ridge_problem()
    shared = BilevelProblem(lambda w, h: problem.inner_loss(w, {"log_l2": h["log_l2"].expand(4)}),
                            problem.outer_loss, GradientDescent(100, SGD(0.05)))
    history = hyperparameter_descent(shared, weights, {"log_l2": torch.tensor([1.0], dtype=DOUBLE)}, ImplicitCG(10),
                                     steps=150, warm_start=True,
                                     outer_optimizer=lambda tensors: torch.optim.Adam(tensors, lr=0.1))
    grid = torch.linspace(-8, 3, 2201, dtype=DOUBLE)
    losses = torch.stack([closed_form(value.expand(4)) for value in grid])
    best = grid[losses.argmin()]
    assert float(history.hyperparameters["log_l2"]) == pytest.approx(float(best), abs=0.02)
    assert history.outer_losses[-1] < history.outer_losses[0]


def test_learning_to_reweight_weights_follow_gradient_alignment_by_hand():
    generator = torch.Generator().manual_seed(3)
    noisy_x, clean_x = torch.randn(6, 2, generator=generator, dtype=DOUBLE), torch.randn(4, 2, generator=generator, dtype=DOUBLE)
    noisy_y, clean_y = torch.randn(6, generator=generator, dtype=DOUBLE), torch.randn(4, generator=generator, dtype=DOUBLE)
    weights = {"w": torch.tensor([0.3, -0.2], dtype=DOUBLE)}

    def per_example(w, x, y):
        return (x @ w["w"] - y) ** 2

    result = example_weights(per_example, weights, noisy_x, noisy_y, clean_x, clean_y, inner_lr=0.1)
    # By hand: -d clean / d eps_i = inner_lr * grad_clean . grad_i with grad_i = 2 (x_i.w - y_i) x_i.
    residual_clean = clean_x @ weights["w"] - clean_y
    grad_clean = (2 * residual_clean[:, None] * clean_x).mean(0)
    grad_examples = 2 * (noisy_x @ weights["w"] - noisy_y)[:, None] * noisy_x
    alignment = torch.clamp(0.1 * grad_examples @ grad_clean, min=0)
    torch.testing.assert_close(result, alignment / alignment.sum())
    assert (result == 0).any() and (result > 0).any() and float(result.sum()) == pytest.approx(1.0)


def test_hyperparameter_descent_keeps_the_best_hyperparameters_it_evaluated():
    problem, weights, hyper = tiny_network_problem(steps=10)
    after_update = []
    history = hyperparameter_descent(problem, weights, hyper, Unrolled(), steps=12,
                                     outer_optimizer=lambda tensors: torch.optim.Adam(tensors, lr=0.5),
                                     callback=lambda step, h, loss: after_update.append(h))
    evaluated = [hyper, *after_update[:-1]]  # step s evaluates the hyperparameters before its update
    best = min(range(12), key=lambda step: history.outer_losses[step])
    assert best not in (0, 11)  # an overshooting rate: the best is neither the first nor the last
    for name in hyper:
        torch.testing.assert_close(history.best_hyperparameters[name], evaluated[best][name])
        torch.testing.assert_close(history.hyperparameters[name], after_update[-1][name])
    solution, _ = problem.solver.run(problem.inner_loss, weights, history.best_hyperparameters)
    assert float(problem.outer_loss(solution, history.best_hyperparameters)) == pytest.approx(history.best_outer_loss)


def test_implicit_cg_damping_solves_the_damped_system():
    problem, weights, hyper, _ = ridge_problem()
    train_x, train_y, _, _ = ridge_data()
    result = hypergradient(problem, weights, hyper, ImplicitCG(iterations=10, damping=0.5))
    solution, strengths = result.weights["w"], torch.exp(hyper["log_l2"])
    hessian = 2 * train_x.T @ train_x / len(train_y) + 2 * torch.diag(strengths)
    outer_weight_grad = torch.func.grad(lambda w: problem.outer_loss({"w": w}, hyper))(solution)
    # d/d log_l2_i of the inner gradient's i-th entry 2 * l2_i * w_i is 2 * l2_i * w_i; the outer loss has no direct term.
    expected = -(2 * strengths * solution) * torch.linalg.solve(hessian + 0.5 * torch.eye(4, dtype=DOUBLE), outer_weight_grad)
    torch.testing.assert_close(result.gradient["log_l2"], expected, rtol=1e-7, atol=1e-12)
    assert result.linear_system_residual < 1e-8


def test_implicit_mode_warns_when_the_hessian_is_not_positive_definite():
    # inner = -w^2/2 + h w is stationary at w = h with Hessian -1; outer = w^2/2: d outer / d h = h.
    problem = BilevelProblem(lambda w, h: -0.5 * w["w"] ** 2 + h["h"] * w["w"], lambda w, h: 0.5 * w["w"] ** 2,
                             GradientDescent(1, SGD(0.0)))
    weights, hyper = {"w": torch.tensor(2.0, dtype=DOUBLE)}, {"h": torch.tensor(2.0, dtype=DOUBLE)}
    with pytest.warns(RuntimeWarning, match="relative residual of 2.*add damping"):
        wrong = hypergradient(problem, weights, hyper, ImplicitCG(iterations=5))
    assert float(wrong.gradient["h"]) == pytest.approx(-2.0) and wrong.linear_system_residual == pytest.approx(2.0)
    right = hypergradient(problem, weights, hyper, Unrolled())  # the solver does not move: dw/dh = 0 here
    assert float(right.gradient["h"]) == pytest.approx(0.0)


def test_implicit_modes_accept_weights_the_inner_loss_never_reads():
    problem, weights, hyper, _ = ridge_problem()
    with_bias = BilevelProblem(problem.inner_loss, lambda w, h: problem.outer_loss(w, h) + (w["bias"] ** 2).sum(),
                               problem.solver)
    extended = dict(weights, bias=torch.tensor([0.5], dtype=DOUBLE))
    for method in (ImplicitCG(10), ImplicitNeumann(300, 0.3)):
        result = hypergradient(with_bias, extended, hyper, method)
        reference = hypergradient(problem, weights, hyper, method)
        torch.testing.assert_close(result.gradient["log_l2"], reference.gradient["log_l2"])
