"""Hyper-gradients by forward-mode differentiation along the inner solver.

Forward-mode ("real-time") hyper-gradients (Franceschi et al. 2017, "Forward and Reverse
Gradient-Based Hyperparameter Optimization") carry the tangent ``d weights_t / d h . direction``
alongside the solver's steps, so memory does not grow with the number of steps ``T``; one pass
gives the derivative along one direction of hyperparameter space, so the full gradient of ``m``
scalar hyperparameters costs ``m`` tangents. Here each tangent is one ``torch.func.jvp`` of

    hyperparameters -> outer_loss(solver(weights_0, hyperparameters), hyperparameters)

and ``chunk_size`` basis directions are pushed at once with ``torch.func.vmap``. The choice for
a few hyperparameters over a long inner run (a learning rate and a momentum over thousands of
steps); for many hyperparameters use reverse mode (:class:`~innerloop.bilevel.unrolled.Unrolled`)
or :mod:`~innerloop.bilevel.implicit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.bilevel.problem import BilevelProblem, Hypergradient, check_inputs, detached, gradient_norm
from innerloop.errors import ConfigError
from innerloop.functional.params import Params


@dataclass(frozen=True)
class ForwardMode:
    """Forward-mode hyper-gradient, ``chunk_size`` directions per vectorised ``jvp`` pass."""

    chunk_size: int = 8

    def hypergradient(self, problem: BilevelProblem, weights: Params, hyperparameters: Params) -> Hypergradient:
        check_inputs(weights, hyperparameters)
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        start, constant = detached(weights), detached(hyperparameters)
        names = list(constant)
        sizes = [constant[name].numel() for name in names]
        total = sum(sizes)

        def outer_of(hyper: Params) -> tuple[Tensor, Params]:
            solution, _ = problem.solver.run(problem.inner_loss, start, hyper)
            return problem.outer_loss(solution, hyper), solution

        def directional(direction: Tensor) -> tuple[Tensor, Tensor, Params]:
            tangent = {name: part.reshape(constant[name].shape)
                       for name, part in zip(names, torch.split(direction, sizes))}
            return torch.func.jvp(outer_of, (constant,), (tangent,), has_aux=True)

        basis = torch.eye(total, dtype=constant[names[0]].dtype, device=constant[names[0]].device)
        tangents, loss, solution = [], torch.tensor(float("nan")), start
        for chunk in torch.split(basis, self.chunk_size):
            losses, chunk_tangents, solutions = torch.func.vmap(directional)(chunk)
            tangents.append(chunk_tangents)
            loss, solution = losses[0], {name: value[0] for name, value in solutions.items()}
        flat = torch.cat(tangents)
        gradient = {name: part.reshape(constant[name].shape).detach()
                    for name, part in zip(names, torch.split(flat, sizes))}
        solution = detached(solution)
        return Hypergradient(gradient, solution, float(loss), gradient_norm(problem.inner_loss, solution, constant))
