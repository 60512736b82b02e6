"""Siamese networks for one-shot classification (Koch, Zemel & Salakhutdinov, ICML DL workshop 2015).

Twin embeddings ``h = backbone(x)`` share their weights. Two images are compared by a weighted
L1 distance followed by a logistic unit,

    pair_logit(x1, x2) = distance_weights · |h(x1) - h(x2)| + distance_bias
    p(same class | x1, x2) = sigmoid(pair_logit)

Training is pair verification: every (query, support) pair of a training episode is a
same/different example, and the loss is the binary cross-entropy with the positive and negative
pairs weighted equally (an N-way episode has N-1 negatives per positive). One-shot
classification assigns a query to the class of its most similar support example,

    logits[q, k] = max_{i : support_y[i] = k} pair_logit(query_x[q], support_x[i]).

Deviation from the paper: the twin is the library's backbone (Conv-4 by default) instead of
Koch et al.'s larger 105x105 network, so all methods of the comparison share the embedding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import embed_episodes
from innerloop.algorithms.embedding_learner import EmbeddingLearner
from innerloop.tasks.episodes import Episodes


def best_match_per_class(pair_logits: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """``[..., Q, S]`` pair scores → ``[..., Q, ways]``: the best-scoring support example of each class."""
    member = F.one_hot(support_y, ways).bool().unsqueeze(-3)  # [..., 1, S, ways]
    scores = pair_logits.unsqueeze(-1).masked_fill(~member, float("-inf"))
    return scores.amax(dim=-2)


class Siamese(EmbeddingLearner):
    """Siamese verification network; classifies by nearest support example under its learned metric."""

    name = "siamese"
    adaptation = "one forward pass of the support set; one pair score per (query, support example)"

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.distance = nn.Linear(backbone.embedding_dim, 1)  # distance_weights, distance_bias

    def pair_logits(self, query: Tensor, support: Tensor) -> Tensor:
        """``[..., Q, D]``, ``[..., S, D]`` → ``[..., Q, S]`` logits of "same class"."""
        return self.distance((query.unsqueeze(-2) - support.unsqueeze(-3)).abs()).squeeze(-1)

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        return best_match_per_class(self.pair_logits(query, support), support_y, ways)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Balanced binary cross-entropy over all (query, support) pairs of the meta-batch."""
        support, query = embed_episodes(self.backbone, episodes)
        pair_logits = self.pair_logits(query, support)  # [T, Q, S]
        same = (episodes.query_y.unsqueeze(-1) == episodes.support_y.unsqueeze(-2)).to(pair_logits.dtype)
        losses = F.binary_cross_entropy_with_logits(pair_logits, same, reduction="none")
        loss = 0.5 * ((losses * same).sum() / same.sum() + (losses * (1 - same)).sum() / (1 - same).sum())
        logits = best_match_per_class(pair_logits, episodes.support_y, episodes.ways)
        accuracy = (logits.argmax(-1) == episodes.query_y).float().mean()
        return loss, {"accuracy": float(accuracy)}
