"""R2-D2's ridge head and MetaOptNet's SVM head against direct solves, with their gradients."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from innerloop.algorithms.metric.metaoptnet import (
    crammer_singer_svm,
    project_onto_simplex,
    svm_dual_objective,
    svm_duality_gap,
    svm_primal_objective,
)
from innerloop.algorithms.metric.r2d2 import ridge_regression_weights


def test_woodbury_ridge_equals_the_direct_primal_solve():
    torch.manual_seed(0)
    features = torch.randn(4, 7, 20, dtype=torch.float64)  # fewer examples than features
    targets = F.one_hot(torch.randint(0, 5, (4, 7)), 5).double()
    weights = ridge_regression_weights(features, targets, 0.3)
    gram = features.transpose(-1, -2) @ features + 0.3 * torch.eye(20, dtype=torch.float64)
    direct = torch.linalg.solve(gram, features.transpose(-1, -2) @ targets)
    assert torch.allclose(weights, direct, atol=1e-10)


def test_ridge_gradients_match_finite_differences():
    torch.manual_seed(1)
    features = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    targets = F.one_hot(torch.randint(0, 3, (2, 5)), 3).double()
    regularization = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, lam: ridge_regression_weights(x, targets, lam),
                                    (features, regularization))


def test_simplex_projection_is_the_closest_point_of_the_simplex():
    torch.manual_seed(2)
    values = torch.randn(50, 4, dtype=torch.float64) * 2
    projected = project_onto_simplex(values, 0.5)
    assert (projected >= 0).all()
    assert torch.allclose(projected.sum(-1), torch.full((50,), 0.5, dtype=torch.float64))
    # no point of a fine grid on the simplex is closer
    grid = [p for p in itertools.product(torch.linspace(0, 0.5, 11).tolist(), repeat=3) if sum(p) <= 0.5 + 1e-12]
    candidates = torch.tensor([[*p, 0.5 - sum(p)] for p in grid], dtype=torch.float64)
    best_on_grid = torch.cdist(values, candidates).min(dim=1).values
    assert (torch.linalg.norm(values - projected, dim=-1) <= best_on_grid + 1e-12).all()


def test_svm_dual_solution_closes_the_duality_gap():
    """A long run of the solver reaches the Crammer–Singer optimum: primal value = dual value."""
    torch.manual_seed(3)
    features = torch.randn(3, 10, 6, dtype=torch.float64)
    labels = torch.randint(0, 4, (3, 10))
    alpha = crammer_singer_svm(features, labels, 4, svm_c=0.5, steps=2000)
    targets = F.one_hot(labels, 4).double()
    assert torch.allclose(alpha.sum(-1), torch.zeros(3, 10, dtype=torch.float64), atol=1e-12)
    assert (alpha <= 0.5 * targets + 1e-12).all()
    gap = svm_duality_gap(features, labels, 4, 0.5, alpha)
    assert (gap >= -1e-9).all() and (gap < 1e-6).all()
    assert (svm_duality_gap(features, labels, 4, 0.5, crammer_singer_svm(features, labels, 4, 0.5, 5)) > 1e-4).any()


def test_svm_primal_objective_by_hand():
    weights = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    features = torch.tensor([[[2.0, 0.5], [0.2, 0.4]]], dtype=torch.float64)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    # example 0: scores (2, 0.5), label 0: max(0, 0.5 + 1 - 2) = 0; example 1: scores (0.2, 0.4),
    # label 1: max(0, 0.2 + 1 - 0.4) = 0.8. ||W||^2 = 2.
    assert torch.allclose(svm_primal_objective(weights, features, targets, 2.0), torch.tensor([1.0 + 2.0 * 0.8],
                                                                                             dtype=torch.float64))
    alpha = torch.zeros(1, 2, 2, dtype=torch.float64)
    assert torch.allclose(svm_dual_objective(alpha, features @ features.transpose(-1, -2), targets),
                          torch.zeros(1, dtype=torch.float64))


def test_unrolled_svm_gradients_match_finite_differences():
    torch.manual_seed(4)
    features = torch.randn(1, 6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 1, 2, 0, 1, 2]])
    assert torch.autograd.gradcheck(lambda x: crammer_singer_svm(x, labels, 3, 0.5, 15), (features,))
