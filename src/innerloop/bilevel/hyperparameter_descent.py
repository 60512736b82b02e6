"""Hyperparameter optimization by gradient descent on hyper-gradients.

The outer loop of bilevel optimization (Maclaurin et al. 2015; Pedregosa 2016; Franceschi et
al. 2017): at every outer step

    result = method.hypergradient(problem, start_weights, hyperparameters)
    hyperparameters <- outer_optimizer step with gradient result.gradient
    start_weights   <- result.weights if warm_start else the initial weights

``warm_start`` suits convex inner problems solved to optimality (implicit differentiation: the
previous solution is a good start, so few inner steps are needed); learning a solver setting
such as the learning rate needs every inner run to start from the same initial weights
(``warm_start=False``), otherwise it would learn a rate for a moving starting point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from innerloop.bilevel.problem import BilevelProblem, detached
from innerloop.errors import ConfigError, TrainingDiverged
from innerloop.functional.params import Params

OuterOptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


@dataclass
class DescentHistory:
    """The path of the outer loop.

    Attributes:
        hyperparameters: the final hyperparameters (detached).
        weights: the inner solution of the last outer step's solve (detached), i.e. for the
            hyperparameters *before* its update — re-solve for ``hyperparameters`` if you need
            the matching solution.
        outer_losses: the outer loss at every outer step, before that step's update.
        inner_gradient_norms: how stationary each inner solution was.
        best_hyperparameters: those with the lowest outer loss seen (the loss is evaluated at
            every step anyway, so keeping the best costs nothing — as a search keeps its best).
        best_outer_loss: that loss.
    """

    hyperparameters: Params
    weights: Params
    outer_losses: list[float] = field(default_factory=list)
    inner_gradient_norms: list[float] = field(default_factory=list)
    best_hyperparameters: Params = field(default_factory=dict)
    best_outer_loss: float = float("inf")


def _snapshot(leaves: Params) -> Params:
    """A copy: the optimizer updates the leaves in place."""
    return {name: value.detach().clone() for name, value in leaves.items()}


def hyperparameter_descent(problem: BilevelProblem, weights: Params, hyperparameters: Params, method: object,
                           steps: int, outer_optimizer: OuterOptimizerFactory | None = None,
                           warm_start: bool = False,
                           callback: Callable[[int, Params, float], None] | None = None) -> DescentHistory:
    """Run ``steps`` outer updates of ``hyperparameters`` (Adam, rate 0.05, unless ``outer_optimizer``)."""
    if steps < 1:
        raise ConfigError(f"hyperparameter descent needs at least 1 outer step, got {steps}")
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in hyperparameters.items()}
    optimizer = (outer_optimizer or (lambda tensors: torch.optim.Adam(tensors, lr=0.05)))(list(leaves.values()))
    initial = detached(weights)
    start = initial
    history = DescentHistory(_snapshot(leaves), initial)
    for step in range(steps):
        result = method.hypergradient(problem, start, detached(leaves))  # type: ignore[attr-defined]
        if not all(torch.isfinite(grad).all() for grad in result.gradient.values()):
            raise TrainingDiverged(f"the hyper-gradient became non-finite at outer step {step}: lower the outer "
                                   f"learning rate or bound the hyperparameters (e.g. optimize log-values)")
        history.outer_losses.append(result.outer_loss)
        if result.outer_loss < history.best_outer_loss:
            history.best_outer_loss, history.best_hyperparameters = result.outer_loss, _snapshot(leaves)
        history.inner_gradient_norms.append(result.inner_gradient_norm)
        history.weights = result.weights
        optimizer.zero_grad(set_to_none=True)
        for name, leaf in leaves.items():
            leaf.grad = result.gradient[name].to(leaf.dtype).clone()
        optimizer.step()
        start = result.weights if warm_start else initial
        if callback is not None:
            callback(step, _snapshot(leaves), result.outer_loss)
    history.hyperparameters = _snapshot(leaves)
    return history
