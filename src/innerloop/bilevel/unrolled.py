"""Hyper-gradients by reverse-mode differentiation through the unrolled inner solver.

With ``weights_T = solver(weights_0, hyperparameters)`` after ``T`` steps,

    d outer_loss / d hyperparameters = grad of  hyperparameters -> outer_loss(weights_T(hyperparameters), hyperparameters)

computed exactly by backpropagating through every step (Maclaurin et al. 2015; Franceschi et al.
2017, "reverse-HG"); memory grows with ``T``. ``truncate = K`` keeps only the last ``K`` steps in
the graph (Shaban et al. 2019, "Truncated Back-propagation for Bilevel Optimization"): the first
``T - K`` steps run without a graph and their result, weights and optimizer state, is treated as
a constant. The estimate is biased but memory is ``O(K)``; ``K = T`` is the exact gradient.
Unlike implicit differentiation, this mode differentiates hyperparameters of the solver itself
(learning rate, momentum) and needs no convergence of the inner problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from innerloop.bilevel.problem import BilevelProblem, Hypergradient, check_inputs, detached, gradient_norm
from innerloop.errors import ConfigError
from innerloop.functional.params import Params


@dataclass(frozen=True)
class Unrolled:
    """Reverse mode through the solver's steps; ``truncate`` = number of last steps kept (None: all).

    ``measure_stationarity=False`` skips the extra gradient evaluation that fills
    ``Hypergradient.inner_gradient_norm`` (nan then): worth it when the solver runs one step.
    """

    truncate: int | None = None
    measure_stationarity: bool = True

    def hypergradient(self, problem: BilevelProblem, weights: Params, hyperparameters: Params) -> Hypergradient:
        check_inputs(weights, hyperparameters)
        total = problem.solver.steps
        kept = total if self.truncate is None else self.truncate
        if not 1 <= kept <= total:
            raise ConfigError(f"truncate must be in 1..{total} (the solver's steps), got {self.truncate}")
        start, state = detached(weights), None
        constant = detached(hyperparameters)
        if kept < total:
            start, state = problem.solver.run_autograd(problem.inner_loss, start, constant, create_graph=False,
                                                       steps=total - kept)
            state = _detached_state(state)
        leaves = {name: value.clone().requires_grad_(True) for name, value in constant.items()}
        with torch.enable_grad():
            solution, _ = problem.solver.run_autograd(problem.inner_loss, start, leaves, create_graph=True,
                                                      steps=kept, state=state)
            loss = problem.outer_loss(solution, leaves)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        gradient = {name: torch.zeros_like(value) if grad is None else grad.detach()
                    for (name, value), grad in zip(constant.items(), grads)}
        solution = detached(solution)
        norm = gradient_norm(problem.inner_loss, solution, constant) if self.measure_stationarity else float("nan")
        return Hypergradient(gradient, solution, float(loss.detach()), norm)


def _detached_state(state: object) -> object:
    """The optimizer state of the untracked steps, as constants (tensors, dicts of them, dataclasses)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {name: _detached_state(value) for name, value in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(_detached_state(value) for value in state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(state, **{field.name: _detached_state(getattr(state, field.name))
                                             for field in dataclasses.fields(state)})
    return state
