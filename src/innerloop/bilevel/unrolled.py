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

from dataclasses import dataclass

import torch

from innerloop.bilevel.problem import BilevelProblem, Hypergradient, check_inputs, detached, gradient_norm
from innerloop.errors import ConfigError
from innerloop.functional.params import Params


@dataclass(frozen=True)
class Unrolled:
    """Reverse mode through the solver's steps; ``truncate`` = number of last steps kept (None: all)."""

    truncate: int | None = None

    def hypergradient(self, problem: BilevelProblem, weights: Params, hyperparameters: Params) -> Hypergradient:
        check_inputs(weights, hyperparameters)
        total = problem.solver.steps
        kept = total if self.truncate is None else self.truncate
        if not 1 <= kept <= total:
            raise ConfigError(f"truncate must be in 1..{total} (the solver's steps), got {self.truncate}")
        start, state = detached(weights), None
        constant = detached(hyperparameters)
        if kept < total:
            with torch.no_grad():
                start, state = problem.solver.run(problem.inner_loss, start, constant, steps=total - kept)

        def outer_of(hyper: Params) -> tuple[torch.Tensor, tuple[torch.Tensor, Params]]:
            solution, _ = problem.solver.run(problem.inner_loss, start, hyper, steps=kept, state=state)
            loss = problem.outer_loss(solution, hyper)
            return loss, (loss.detach(), detached(solution))

        gradient, (loss, solution) = torch.func.grad(outer_of, has_aux=True)(constant)
        return Hypergradient(detached(gradient), solution, float(loss),
                             gradient_norm(problem.inner_loss, solution, constant))
