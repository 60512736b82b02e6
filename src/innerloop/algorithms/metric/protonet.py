"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Inner loop (closed form): each class's prototype is the mean embedding of its support examples,

    prototypes[k] = mean_{i : support_y[i] = k} backbone(support_x[i])

Predictor: a softmax over negative squared Euclidean distances to the prototypes,

    logits[q, k] = -|| backbone(query_x[q]) - prototypes[k] ||^2

Outer loop: minimise the query cross-entropy with respect to the backbone parameters. Training
may use more ways than testing (the paper trains 60-way). BatchNorm uses batch statistics while
meta-training and running statistics at evaluation, so predictions on one query do not depend on
the others: the method is not transductive.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner, embed_episodes
from innerloop.tasks.episodes import Episodes


def class_means(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean embedding per label: ``[..., S, D]``, ``[..., S]`` → ``[..., ways, D]``."""
    one_hot = F.one_hot(labels, ways).to(embeddings.dtype)  # [..., S, ways]
    sums = one_hot.transpose(-1, -2) @ embeddings
    return sums / one_hot.sum(dim=-2).unsqueeze(-1)


def negative_squared_distances(queries: Tensor, prototypes: Tensor) -> Tensor:
    """``-||queries[..., q] - prototypes[..., k]||^2``: ``[..., Q, D]``, ``[..., K, D]`` → ``[..., Q, K]``."""
    return -(queries.unsqueeze(-2) - prototypes.unsqueeze(-3)).pow(2).sum(-1)


class ProtoNet(MetaLearner):
    """Prototypical Networks on any embedding backbone."""

    name = "protonet"
    transductive = False

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Tensor:
        return class_means(self.backbone(support_x), support_y, ways)

    def predict(self, state: Tensor, query_x: Tensor) -> Tensor:
        return negative_squared_distances(self.backbone(query_x), state)

    def query_logits(self, episodes: Episodes) -> Tensor:
        """All tasks' support and query images go through the backbone in one call."""
        support, query = embed_episodes(self.backbone, episodes)
        prototypes = class_means(support, episodes.support_y, episodes.ways)
        return negative_squared_distances(query, prototypes)
