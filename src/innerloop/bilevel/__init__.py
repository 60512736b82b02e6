"""Bilevel optimization and hyper-gradients: ``d outer_loss / d hyperparameters`` through an inner solver.

A user writes the two objectives as functions of two parameter dicts and picks the inner solver
and how to differentiate through it::

    problem = BilevelProblem(inner_loss, outer_loss, GradientDescent(steps=100, optimizer=SGD(0.1)))
    result = hypergradient(problem, weights, hyperparameters, Unrolled())          # exact, O(T) memory
    result = hypergradient(problem, weights, hyperparameters, Unrolled(truncate=10))  # last 10 steps
    result = hypergradient(problem, weights, hyperparameters, ImplicitCG(20))       # at the optimum
    result = hypergradient(problem, weights, hyperparameters, ImplicitNeumann(50, 0.1))
    result = hypergradient(problem, weights, hyperparameters, ForwardMode())        # O(1) memory in T

:func:`hyperparameter_descent` runs the outer loop (a torch optimizer on the hyperparameters);
:mod:`innerloop.bilevel.learning_to_reweight` learns per-example loss weights online; the
recipes in ``configs/bilevel/`` compare these with grid and random search at equal compute
(``innerloop train configs/bilevel/RECIPE.yaml``).
"""

from __future__ import annotations

from innerloop.bilevel.forward_mode import ForwardMode
from innerloop.bilevel.hyperparameter_descent import DescentHistory, hyperparameter_descent
from innerloop.bilevel.implicit import ImplicitCG, ImplicitNeumann
from innerloop.bilevel.problem import BilevelProblem, GradientDescent, Hypergradient, Objective
from innerloop.bilevel.unrolled import Unrolled
from innerloop.functional.params import Params

HypergradientMethod = Unrolled | ImplicitCG | ImplicitNeumann | ForwardMode


def hypergradient(problem: BilevelProblem, weights: Params, hyperparameters: Params,
                  method: HypergradientMethod | None = None) -> Hypergradient:
    """``d problem.outer_loss(solver(weights, h), h) / d h`` at ``h = hyperparameters``.

    ``weights`` is where the inner solver starts; ``method`` defaults to exact reverse mode
    (:class:`Unrolled`). Nothing passed in is modified or needs ``requires_grad``.
    """
    return (method or Unrolled()).hypergradient(problem, weights, hyperparameters)


__all__ = ["BilevelProblem", "DescentHistory", "ForwardMode", "GradientDescent", "Hypergradient",
           "HypergradientMethod", "ImplicitCG", "ImplicitNeumann", "Objective", "Unrolled", "hypergradient",
           "hyperparameter_descent"]
