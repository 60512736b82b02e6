"""Implicit differentiation of an inner optimum: conjugate gradient on Hessian-vector products.

For a regularized inner problem

    solution = argmin_phi  inner_loss(phi) + proximal_strength / 2 * || phi - params ||^2

the implicit function theorem gives the derivative of any outer loss ``L(solution)`` with
respect to ``params`` without unrolling the solver (Rajeswaran et al. 2019, iMAML, eq. 6):

    d L / d params = (I + H / proximal_strength)^{-1} grad L(solution),   H = hessian(inner_loss)(solution)

:func:`implicit_gradient` solves that linear system with :func:`conjugate_gradient`, using
Hessian-vector products by double backward at the solution: one graph of the inner gradient,
reused for every iteration, and nothing kept from the inner solver's steps. ``damping`` adds
``damping * I`` to ``H`` (a Tikhonov term for Hessians that are not positive definite). The
pieces are reusable: the bilevel / hyper-gradient API builds on them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from innerloop.functional.params import Params


def _dot(left: Params, right: Params) -> Tensor:
    return sum((left[name] * right[name]).sum() for name in left)


def conjugate_gradient(matvec: Callable[[Params], Params], rhs: Params, iterations: int,
                       tolerance: float = 0.0) -> Params:
    """Approximately solve ``matvec(x) = rhs`` for a symmetric positive-definite operator.

    Starts at ``x = 0`` and runs at most ``iterations`` conjugate-gradient steps, stopping early
    when the squared residual norm falls below ``tolerance``, or — truncated CG, as in
    Steihaug's method — when a search direction has non-positive curvature (the operator is not
    positive definite there, as ``I + H / lambda`` can be for a non-convex network); the iterate
    reached so far is returned, or ``rhs`` itself (the solution for an identity operator) if
    that happens at the first step.
    """
    if iterations < 1:
        raise ValueError(f"conjugate gradient needs at least 1 iteration, got {iterations}")
    solution = {name: torch.zeros_like(value) for name, value in rhs.items()}
    residual = {name: value.clone() for name, value in rhs.items()}
    direction = {name: value.clone() for name, value in rhs.items()}
    residual_norm = _dot(residual, residual)
    for iteration in range(iterations):
        first = iteration == 0
        if float(residual_norm) <= tolerance:
            break
        product = matvec(direction)
        curvature = _dot(direction, product)
        if float(curvature) <= 0:
            if first:
                return {name: value.clone() for name, value in rhs.items()}
            break
        step = residual_norm / curvature
        solution = {n: solution[n] + step * direction[n] for n in solution}
        residual = {n: residual[n] - step * product[n] for n in residual}
        new_norm = _dot(residual, residual)
        direction = {n: residual[n] + (new_norm / residual_norm) * direction[n] for n in direction}
        residual_norm = new_norm
    return solution


def implicit_gradient(inner_loss: Callable[[Params], Tensor], solution: Params, outer_grad: Params,
                      proximal_strength: float, iterations: int, damping: float = 0.0) -> Params:
    """``(I + (H + damping I) / proximal_strength)^{-1} outer_grad`` with ``H`` the Hessian of
    ``inner_loss`` (without the proximal term) at ``solution``.

    Args:
        inner_loss: the task's inner objective as a function of the parameters it adapts.
        solution: the (approximate) inner optimum; it is detached here.
        outer_grad: the gradient of the outer loss at ``solution``.
        proximal_strength: ``lambda`` of the proximal term.
        iterations: conjugate-gradient iterations.
        damping: Tikhonov term added to the Hessian.
    """
    if proximal_strength <= 0:
        raise ValueError(f"proximal_strength must be > 0, got {proximal_strength}")
    if set(solution) != set(outer_grad):
        raise KeyError(f"outer_grad must have the same parameters as solution; got "
                       f"{sorted(set(solution) ^ set(outer_grad))[:3]} in only one of them")
    point = {name: value.detach().requires_grad_(True) for name, value in solution.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(inner_loss(point), list(point.values()), create_graph=True)

    def matvec(vector: Params) -> Params:
        products = torch.autograd.grad(grads, list(point.values()), grad_outputs=[vector[n] for n in point],
                                       retain_graph=True, allow_unused=True)
        return {name: vector[name] + ((hv if hv is not None else torch.zeros_like(vector[name]))
                                      + damping * vector[name]) / proximal_strength
                for (name, _), hv in zip(point.items(), products)}

    rhs = {name: outer_grad[name].detach() for name in point}
    return {name: value.detach() for name, value in conjugate_gradient(matvec, rhs, iterations).items()}
