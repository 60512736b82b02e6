"""What the closed-form-head learners (R2-D2, MetaOptNet) share.

The inner loop solves a convex problem on the support embeddings in closed form (or by a fixed,
differentiable number of solver iterations) for a linear classifier ``weights [ways, D + 1]``
(a constant 1 feature is appended, so the last column is the bias); the predictor is

    logits[q, k] = logit_scale * (weights[k] · [backbone(query_x[q]), 1]),

with ``logit_scale`` learned in the outer loop (the solvers' outputs are on the scale of the
one-hot targets, too flat for a softmax). R2-D2 also learns a scalar shift of all logits; a
softmax ignores it, so it is left out. Gradients reach the backbone through the solution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.algorithms.embedding_learner import EmbeddingLearner


def with_bias_feature(features: Tensor) -> Tensor:
    """Append a constant 1 feature: ``[..., D]`` → ``[..., D + 1]``."""
    return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)


class ClosedFormHead(EmbeddingLearner):
    """A backbone and a linear head solved on each support set; subclasses define :meth:`solve`."""

    def __init__(self, backbone: nn.Module, initial_logit_scale: float = 10.0) -> None:
        super().__init__(backbone)
        self.logit_scale = nn.Parameter(torch.tensor(float(initial_logit_scale)))

    def solve(self, support: Tensor, support_y: Tensor, ways: int) -> Tensor:
        """``support [T, S, D + 1]``, labels ``[T, S]`` → head weights ``[T, ways, D + 1]``."""
        raise NotImplementedError

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        weights = self.solve(with_bias_feature(support), support_y, ways)
        return self.logit_scale * (with_bias_feature(query) @ weights.transpose(-1, -2))

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Tensor:
        """Solve the head once per task (``predict`` then only applies it)."""
        return self.solve(with_bias_feature(self.backbone(support_x))[None], support_y[None], ways)[0]

    def predict(self, state: Tensor, query_x: Tensor) -> Tensor:
        features = with_bias_feature(self.backbone(query_x))
        return self.logit_scale * (features @ state.transpose(-1, -2))
