"""R2-D2: ridge regression differentiable discriminator (Bertinetto, Henriques, Torr & Vedaldi, ICLR 2019).

Inner loop: ridge regression from the support embeddings ``X [S, D + 1]`` (bias feature
appended) to the one-hot labels ``Y [S, ways]``, solved in the Woodbury form, which inverts an
``S x S`` matrix instead of a ``(D + 1) x (D + 1)`` one (few shots, many features):

    W = X^T (X X^T + ridge_lambda I_S)^{-1} Y        (equal to (X^T X + ridge_lambda I)^{-1} X^T Y)

Predictor: ``logits = logit_scale * X_query W``. The outer loop learns the backbone,
``ridge_lambda`` (through its logarithm) and ``logit_scale``, with gradients through the solve.
Not transductive.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.metric.closed_form_head import ClosedFormHead


def ridge_regression_weights(features: Tensor, targets: Tensor, ridge_lambda: Tensor | float) -> Tensor:
    """Woodbury-form ridge solution: ``[..., S, D]``, ``[..., S, K]`` → ``[..., D, K]``."""
    gram = features @ features.transpose(-1, -2)
    identity = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return features.transpose(-1, -2) @ torch.linalg.solve(gram + ridge_lambda * identity, targets)


class R2D2(ClosedFormHead):
    """Differentiable ridge-regression head on a learned embedding."""

    name = "r2d2"
    adaptation = "one forward pass of the support set and one S x S linear solve"

    def __init__(self, backbone: nn.Module, initial_ridge_lambda: float = 1.0,
                 initial_logit_scale: float = 10.0) -> None:
        super().__init__(backbone, initial_logit_scale)
        self.log_ridge_lambda = nn.Parameter(torch.tensor(math.log(initial_ridge_lambda)))

    @property
    def ridge_lambda(self) -> Tensor:
        return self.log_ridge_lambda.exp()

    def solve(self, support: Tensor, support_y: Tensor, ways: int) -> Tensor:
        targets = F.one_hot(support_y, ways).to(support.dtype)
        return ridge_regression_weights(support, targets, self.ridge_lambda).transpose(-1, -2)
