"""MetaOptNet with a differentiable multi-class SVM head (Lee, Maji, Ravichandran & Soatto, CVPR 2019).

Inner loop: the Crammer–Singer multi-class SVM on the support embeddings ``x_n`` (bias feature
appended), solved in its dual. With one-hot labels ``Y [S, ways]`` and ``K = X X^T``, the dual
variables ``alpha [S, ways]`` maximize

    D(alpha) = -1/2 trace(alpha^T K alpha) + sum_n alpha[n, y_n]
    subject to  sum_k alpha[n, k] = 0,   alpha[n, k] <= svm_c * Y[n, k],

and the classifier is ``W = alpha^T X``. The paper solves the QP with an interior-point solver
(qpth); here there is no solver dependency: ``solver_steps`` iterations of accelerated
projected gradient ascent (FISTA, step ``1 / lambda_max(K)``), every one differentiable, so the
outer gradient is that of the unrolled solver. Per example the constraint set is a shifted
simplex: ``svm_c * Y[n] - alpha[n]`` lies in ``{beta >= 0, sum beta = svm_c}``, and the
projection onto it is the sort-based Euclidean projection (Duchi et al. 2008).

The primal ``1/2 ||W||^2 + svm_c * sum_n max_k (W_k x_n + 1[k != y_n] - W_{y_n} x_n)`` equals
``D`` at the optimum; :func:`svm_duality_gap` measures how far a solution is from it (tests).
Support sets of Conv-4 features are badly conditioned (condition numbers near 1,000 at 20
ways): 20 iterations leave the 20-way dual about 40% short of its optimum, 100 iterations
about 0.03%, hence the default of 100.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from typing import Any

from torch import Tensor, nn

from innerloop.algorithms.metric.closed_form_head import ClosedFormHead


def project_onto_simplex(values: Tensor, total: float) -> Tensor:
    """Euclidean projection of each row ``values[..., :]`` onto ``{beta >= 0, sum(beta) = total}``."""
    sorted_values, _ = values.sort(dim=-1, descending=True)
    cumulative = sorted_values.cumsum(dim=-1) - total
    ranks = torch.arange(1, values.shape[-1] + 1, dtype=values.dtype, device=values.device)
    active = (sorted_values - cumulative / ranks) > 0
    count = active.sum(dim=-1, keepdim=True)  # >= 1 always
    threshold = cumulative.gather(-1, count - 1) / count.to(values.dtype)
    return (values - threshold).clamp_min(0)


def svm_dual_objective(alpha: Tensor, gram: Tensor, targets: Tensor) -> Tensor:
    """``D(alpha)`` per task: ``[..., S, K]``, ``[..., S, S]``, one-hot ``[..., S, K]`` → ``[...]``."""
    return -0.5 * (alpha * (gram @ alpha)).sum((-2, -1)) + (alpha * targets).sum((-2, -1))


def svm_primal_objective(weights: Tensor, features: Tensor, targets: Tensor, svm_c: float) -> Tensor:
    """Crammer–Singer primal per task: ``weights [..., K, D]``, ``features [..., S, D]``."""
    scores = features @ weights.transpose(-1, -2)  # [..., S, K]
    true_score = (scores * targets).sum(-1, keepdim=True)
    slack = (scores + 1 - targets - true_score).amax(dim=-1)
    return 0.5 * weights.pow(2).sum((-2, -1)) + svm_c * slack.sum(-1)


def crammer_singer_svm(features: Tensor, labels: Tensor, ways: int, svm_c: float, steps: int) -> Tensor:
    """Dual variables ``alpha [..., S, ways]`` after ``steps`` FISTA iterations (differentiable)."""
    targets = F.one_hot(labels, ways).to(features.dtype)
    gram = features @ features.transpose(-1, -2)
    step_size = 1.0 / torch.linalg.eigvalsh(gram)[..., -1].clamp_min(1e-12)  # differentiated too
    step_size = step_size[..., None, None]
    upper = svm_c * targets
    alpha = torch.zeros_like(targets)
    momentum_point, previous, t = alpha, alpha, 1.0
    for _ in range(steps):
        ascent = momentum_point + step_size * (targets - gram @ momentum_point)
        alpha = upper - project_onto_simplex(upper - ascent, svm_c)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum_point = alpha + ((t - 1) / t_next) * (alpha - previous)
        previous, t = alpha, t_next
    return alpha


def svm_duality_gap(features: Tensor, labels: Tensor, ways: int, svm_c: float, alpha: Tensor) -> Tensor:
    """Primal minus dual objective of the solution ``alpha`` (>= 0; 0 at the optimum)."""
    targets = F.one_hot(labels, ways).to(features.dtype)
    weights = alpha.transpose(-1, -2) @ features
    gram = features @ features.transpose(-1, -2)
    return svm_primal_objective(weights, features, targets, svm_c) - svm_dual_objective(alpha, gram, targets)


class MetaOptNetSVM(ClosedFormHead):
    """A backbone with a differentiable Crammer–Singer SVM head solved on each support set."""

    name = "metaoptnet"

    def __init__(self, backbone: nn.Module, svm_c: float = 0.1, solver_steps: int = 100,
                 initial_logit_scale: float = 10.0) -> None:
        super().__init__(backbone, initial_logit_scale)
        if svm_c <= 0 or solver_steps < 1:
            raise ValueError(f"svm_c must be > 0 and solver_steps >= 1, got {svm_c}, {solver_steps}")
        self.svm_c = svm_c
        self.solver_steps = solver_steps

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> MetaOptNetSVM:
        options = {"svm_c": config.model.svm_c, "solver_steps": config.model.solver_steps}
        return cls(backbone, **{key: value for key, value in options.items() if value is not None})

    def adaptation_cost(self) -> str:
        return (f"one forward pass of the support set and {self.solver_steps} projected-gradient "
                f"iterations of the SVM dual (S x S matrix products)")

    def solve(self, support: Tensor, support_y: Tensor, ways: int) -> Tensor:
        alpha = crammer_singer_svm(support, support_y, ways, self.svm_c, self.solver_steps)
        return alpha.transpose(-1, -2) @ support
