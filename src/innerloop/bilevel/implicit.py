"""Hyper-gradients by implicit differentiation of the inner optimum.

If ``weights*`` is a stationary point of the inner objective, ``grad_w inner_loss(weights*, h) = 0``,
the implicit function theorem gives (Bengio 2000; Pedregosa 2016; Lorraine et al. 2020)

    d outer_loss / d h = grad_h outer_loss(weights*, h)
                         - grad_h [ grad_w inner_loss(weights*, h) . inverse_hvp ]
    inverse_hvp = H^{-1} grad_w outer_loss(weights*, h),     H = hessian_w inner_loss(weights*, h)

independent of how ``weights*`` was found: the solver runs without a graph and only
Hessian-vector products at the solution are needed (double backward through one graph of the
inner gradient, which also gives the mixed derivative).
The linear system is solved by

* :class:`ImplicitCG` — conjugate gradient (``innerloop.functional.conjugate_gradient``) on
  ``H + damping * I``; ``damping`` (default 0) is the user's Tikhonov term for Hessians that are
  not positive definite (a non-convex inner problem): CG stops at the first direction of
  non-positive curvature and returns what it has, which is then *not* ``H^{-1} v``; or
* :class:`ImplicitNeumann` — the truncated Neumann series
  ``inverse_hvp ~ step_size * sum_{j=0..terms} (I - step_size * H)^j grad_w outer_loss``
  (Lorraine et al. 2020), which converges when every eigenvalue of ``H`` lies in
  ``(0, 2 / step_size)``: ``H`` positive definite and ``step_size < 2 / largest eigenvalue``.

Both check their answer: ``Hypergradient.linear_system_residual`` is
``|| H inverse_hvp - v || / || v ||`` (one more Hessian-vector product), and a residual above 0.1
raises a :class:`RuntimeWarning` that says what to change (more iterations or terms, damping, a
smaller step size, a better-converged inner solution).

Hyperparameters that act only through the solver (a learning rate) have no implicit gradient —
at an exact optimum the solution does not depend on them — and are refused: use
:class:`~innerloop.bilevel.unrolled.Unrolled` or :class:`~innerloop.bilevel.forward_mode.ForwardMode`.
``Hypergradient.inner_gradient_norm`` says how stationary the solution really was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from innerloop.bilevel.problem import BilevelProblem, Hypergradient, check_inputs, detached, gradient_norm
from innerloop.errors import ConfigError
from innerloop.functional.implicit import conjugate_gradient
from innerloop.functional.params import Params


def _refuse_solver_only(problem: BilevelProblem, solution: Params, hyperparameters: Params) -> None:
    """Hyperparameters the objectives never read get an all-zero gradient here: refuse them."""
    probe = {name: value.detach().requires_grad_(True) for name, value in hyperparameters.items()}
    with torch.enable_grad():
        used = torch.autograd.grad(problem.inner_loss(solution, probe) + problem.outer_loss(solution, probe),
                                   list(probe.values()), allow_unused=True)
    unused = [name for name, grad in zip(probe, used) if grad is None]
    if unused:
        raise ConfigError(f"hyperparameter(s) {unused} appear in neither inner_loss nor outer_loss: implicit "
                          f"differentiation treats the inner solution as an exact optimum, which does not depend "
                          f"on solver settings such as a learning rate; use Unrolled() or ForwardMode() for them")


def _implicit(problem: BilevelProblem, weights: Params, hyperparameters: Params,
              solve: Callable[[Callable[[Params], Params], Params], Params], damping: float = 0.0) -> Hypergradient:
    check_inputs(weights, hyperparameters)
    constant = detached(hyperparameters)
    solution, _ = problem.solver.run_autograd(problem.inner_loss, detached(weights), constant, create_graph=False)
    solution = detached(solution)
    _refuse_solver_only(problem, solution, constant)
    points = {name: value.requires_grad_(True) for name, value in detached(solution).items()}
    hyper = {name: value.clone().requires_grad_(True) for name, value in constant.items()}
    names = list(points)
    with torch.enable_grad():
        outer = problem.outer_loss(points, hyper)
        outer_grads = torch.autograd.grad(outer, [*points.values(), *hyper.values()], allow_unused=True)
        # One graph of the inner gradient at the solution serves every Hessian-vector product
        # (d/d weights) and the mixed second derivative (d/d hyperparameters).
        inner_grads = torch.autograd.grad(problem.inner_loss(points, hyper), list(points.values()), create_graph=True,
                                          allow_unused=True)
    # Weights the inner loss never reads are not determined by it (no stationarity condition, a
    # zero Hessian block) and carry no mixed derivative: the linear system is over the others.
    used = [name for name, grad in zip(names, inner_grads) if grad is not None]
    inner_grads = tuple(grad for grad in inner_grads if grad is not None)
    active = {name: points[name] for name in used}

    def zeros_if_none(grads: tuple, like: Params) -> Params:
        return {name: torch.zeros_like(value) if grad is None else grad.detach()
                for (name, value), grad in zip(like.items(), grads)}

    outer_weight_grad = zeros_if_none(outer_grads[: len(points)], points)
    outer_hyper_grad = zeros_if_none(outer_grads[len(points):], hyper)
    rhs = {name: outer_weight_grad[name] for name in used}

    def hessian_vector_product(vector: Params) -> Params:
        products = torch.autograd.grad(inner_grads, list(active.values()), grad_outputs=[vector[n] for n in used],
                                       retain_graph=True, allow_unused=True)
        return zeros_if_none(products, active)

    if used:
        inverse_hvp = solve(hessian_vector_product, rhs)
        residual = _relative_residual(hessian_vector_product, inverse_hvp, rhs, damping)
        mixed = zeros_if_none(torch.autograd.grad(inner_grads, list(hyper.values()),
                                                  grad_outputs=[inverse_hvp[n] for n in used], allow_unused=True), hyper)
    else:
        residual, mixed = 0.0, {name: torch.zeros_like(value) for name, value in hyper.items()}
    gradient = {name: outer_hyper_grad[name] - mixed[name] for name in constant}
    if residual > RESIDUAL_WARNING:
        warnings.warn(f"the implicit hyper-gradient solved H x = v only to a relative residual of {residual:.2g} "
                      f"(H: the inner Hessian{' + damping' if damping else ''}), so the hyper-gradient is unreliable: "
                      f"give more CG iterations or Neumann terms, add damping (ImplicitCG(damping=...)) if the "
                      f"inner problem is not convex, lower the Neumann step size, or solve the inner problem "
                      f"further (inner gradient norm {gradient_norm(problem.inner_loss, solution, constant):.2g})",
                      RuntimeWarning, stacklevel=3)
    return Hypergradient(gradient, solution, float(outer.detach()), gradient_norm(problem.inner_loss, solution, constant),
                         residual)


RESIDUAL_WARNING = 0.1


def _relative_residual(hvp: Callable[[Params], Params], solution: Params, rhs: Params, damping: float) -> float:
    product = hvp(solution)
    residual = sum(((product[n] + damping * solution[n] - rhs[n]) ** 2).sum() for n in rhs)
    scale = sum((rhs[n] ** 2).sum() for n in rhs)
    return float(torch.sqrt(residual / scale)) if float(scale) > 0 else 0.0


@dataclass(frozen=True)
class ImplicitCG:
    """Implicit hyper-gradient, ``H^{-1} v`` by ``iterations`` conjugate-gradient steps on ``H + damping I``."""

    iterations: int = 20
    damping: float = 0.0
    tolerance: float = 1e-20

    def hypergradient(self, problem: BilevelProblem, weights: Params, hyperparameters: Params) -> Hypergradient:
        if self.iterations < 1 or self.damping < 0:
            raise ConfigError(f"ImplicitCG needs iterations >= 1 and damping >= 0, got {self.iterations}, {self.damping}")

        def solve(hvp: Callable[[Params], Params], rhs: Params) -> Params:
            def damped(vector: Params) -> Params:
                product = hvp(vector)
                return {name: product[name] + self.damping * vector[name] for name in vector}
            return conjugate_gradient(damped, rhs, self.iterations, self.tolerance)

        return _implicit(problem, weights, hyperparameters, solve, self.damping)


@dataclass(frozen=True)
class ImplicitNeumann:
    """Implicit hyper-gradient, ``H^{-1} v ~ step_size * sum_{j<=terms} (I - step_size H)^j v``."""

    terms: int = 20
    step_size: float = 0.1

    def hypergradient(self, problem: BilevelProblem, weights: Params, hyperparameters: Params) -> Hypergradient:
        if self.terms < 0 or self.step_size <= 0:
            raise ConfigError(f"ImplicitNeumann needs terms >= 0 and step_size > 0, got {self.terms}, {self.step_size}")

        def solve(hvp: Callable[[Params], Params], rhs: Params) -> Params:
            power = dict(rhs)
            total = dict(rhs)
            for _ in range(self.terms):
                product = hvp(power)
                power = {name: power[name] - self.step_size * product[name] for name in power}
                total = {name: total[name] + power[name] for name in total}
            return {name: self.step_size * value for name, value in total.items()}

        return _implicit(problem, weights, hyperparameters, solve)
