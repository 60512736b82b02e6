"""TRPO's machinery (Schulman et al. 2015): Fisher-vector products, the natural-gradient step
by conjugate gradient, and the backtracking line search under a KL constraint.

With ``F`` the Hessian of the mean KL divergence ``KL(π_old ‖ π_θ)`` at ``θ_old`` (the Fisher
information of the policy, pulled back through any adaptation), the step solves ``F x = g`` by
conjugate gradient (``g`` the loss gradient), scales it to the trust region's edge,
``full_step = x · sqrt(2 max_kl / xᵀ F x)``, and backtracks ``θ - ratio^k · full_step`` until the
loss improves and the KL stays within ``max_kl``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from innerloop.functional.implicit import conjugate_gradient
from innerloop.functional.params import Params


def dot(left: Params, right: Params) -> Tensor:
    return sum((left[name] * right[name]).sum() for name in left)


def fisher_vector_product(kl: Tensor, parameters: dict[str, Tensor], damping: float) -> Callable[[Params], Params]:
    """``v ↦ (∇² kl) v + damping · v`` by double backpropagation; ``kl`` must be built with a graph."""
    names = list(parameters)
    grads = torch.autograd.grad(kl, [parameters[n] for n in names], create_graph=True)
    flat_grads = dict(zip(names, grads))

    def product(vector: Params) -> Params:
        hessian_vector = torch.autograd.grad(dot(flat_grads, vector), [parameters[n] for n in names], retain_graph=True)
        return {n: h.detach() + damping * vector[n] for n, h in zip(names, hessian_vector)}

    return product


@torch.no_grad()
def _assign(parameters: dict[str, Tensor], values: Params) -> None:
    for name, parameter in parameters.items():
        parameter.copy_(values[name])


def trust_region_step(parameters: dict[str, Tensor], gradient: Params, fisher_product: Callable[[Params], Params],
                      evaluate: Callable[[], tuple[float, float]], loss_before: float, max_kl: float,
                      cg_iterations: int = 10, line_search_steps: int = 15, line_search_ratio: float = 0.8) -> dict[str, float]:
    """Take the constrained natural-gradient step in place; returns what the line search found.

    ``evaluate()`` returns ``(loss, kl)`` at the parameters' current values without building a graph.
    If no step length improves the loss within ``max_kl``, the parameters are left unchanged.
    """
    direction = conjugate_gradient(fisher_product, gradient, cg_iterations)
    curvature = float(dot(direction, fisher_product(direction)))
    if not math.isfinite(curvature) or curvature <= 0:
        return {"accepted": 0.0, "step_fraction": 0.0, "kl": 0.0, "improvement": 0.0}
    scale = math.sqrt(2.0 * max_kl / curvature)
    start = {name: value.detach().clone() for name, value in parameters.items()}
    for attempt in range(line_search_steps):
        fraction = line_search_ratio ** attempt
        _assign(parameters, {n: start[n] - fraction * scale * direction[n] for n in parameters})
        loss, kl = evaluate()
        if math.isfinite(loss) and loss < loss_before and kl <= max_kl:
            return {"accepted": 1.0, "step_fraction": fraction, "kl": kl, "improvement": loss_before - loss}
    _assign(parameters, start)
    return {"accepted": 0.0, "step_fraction": 0.0, "kl": 0.0, "improvement": 0.0}
