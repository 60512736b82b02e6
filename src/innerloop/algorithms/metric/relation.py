"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales, CVPR 2018).

The backbone keeps feature maps (Conv-4 with its last two blocks unpooled: ``[C, 7, 7]`` on
28x28 images). Inner loop: each class's feature map is the sum of its support examples' maps.
Predictor: a learned relation module scores every (class, query) pair from the two maps
concatenated along the channels,

    relation[q, k] = sigmoid(fc2(relu(fc1(flatten(block2(block1([class_map[k], query_map[q]])))))))

where ``block`` is the backbone's ``conv → BatchNorm → ReLU → max-pool`` and ``fc1`` has
``hidden_units`` (8) units, as in the paper. Loss: mean squared error between the relation
scores and the one-hot query labels (the paper's regression of the relation score). The
scores serve as the logits of the evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner, embed_episodes
from innerloop.algorithms.predictive import CategoricalPredictive
from innerloop.nn.conv4 import conv_block
from innerloop.tasks.episodes import Episodes

EVAL_PAIRS_PER_CALL = 20_000  # (class, query) pairs per relation-module call at evaluation


RELATION_SCORE_FLOOR = 1e-6  # keeps a query whose scores are all 0 at a uniform prediction

class RelationNet(MetaLearner):
    """Relation Networks: a learned comparison of feature maps, trained by MSE to one-hot labels."""

    name = "relation"
    backbone_options = {"pooled_blocks": 2}
    adaptation = "one forward pass of the support set; one relation-module pass per (class, query) pair"

    def __init__(self, backbone: nn.Module, hidden_units: int = 8) -> None:
        super().__init__()
        if not hasattr(backbone, "feature_maps"):
            raise TypeError("RelationNet needs a backbone with feature_maps(images) → [B, C, H, W] "
                            "(innerloop.nn.Conv4 has it)")
        self.backbone = backbone
        channels, side = backbone.out_channels, backbone.feature_side
        blocks = nn.Sequential(conv_block(2 * channels, channels), conv_block(channels, channels))
        with torch.no_grad():
            flat = blocks(torch.zeros(2, 2 * channels, side, side)).flatten(1).shape[1]
        self.relation = nn.Sequential(blocks, nn.Flatten(), nn.Linear(flat, hidden_units), nn.ReLU(),
                                      nn.Linear(hidden_units, 1), nn.Sigmoid())

    def _scores(self, class_maps: Tensor, query_maps: Tensor) -> Tensor:
        """``[T, K, C, H, W]`` class maps, ``[T, Q, C, H, W]`` query maps → relation scores ``[T, Q, K]``.

        In evaluation mode (BatchNorm on running statistics, so pairs are independent) the pairs
        go through the relation module ``EVAL_PAIRS_PER_CALL`` at a time: a 20-way batch of 50
        episodes has 300,000 pairs of ``[128, 7, 7]`` maps, which would need ~15 GB at once.
        """
        num_tasks, ways = class_maps.shape[:2]
        num_queries = query_maps.shape[1]
        per_chunk = num_queries if self.training else max(1, EVAL_PAIRS_PER_CALL // (num_tasks * ways))
        scores = []
        for start in range(0, num_queries, per_chunk):
            queries = query_maps[:, start:start + per_chunk]
            count = queries.shape[1]
            pairs = torch.cat([class_maps.unsqueeze(1).expand(-1, count, -1, -1, -1, -1),
                               queries.unsqueeze(2).expand(-1, -1, ways, -1, -1, -1)], dim=3)
            scores.append(self.relation(pairs.flatten(0, 2)).view(num_tasks, count, ways))
        return torch.cat(scores, dim=1)

    @staticmethod
    def _class_maps(support_maps: Tensor, support_y: Tensor, ways: int) -> Tensor:
        """Per-class sum of support feature maps (the paper sums over the shots)."""
        one_hot = F.one_hot(support_y, ways).to(support_maps.dtype)  # [..., S, ways]
        sums = one_hot.transpose(-1, -2) @ support_maps.flatten(-3)
        return sums.unflatten(-1, support_maps.shape[-3:])

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Tensor:
        return self._class_maps(self.backbone.feature_maps(support_x), support_y, ways)

    def predict(self, state: Tensor, query_x: Tensor) -> Tensor:
        return self._scores(state[None], self.backbone.feature_maps(query_x)[None])[0]

    def query_logits(self, episodes: Episodes) -> Tensor:
        support, query = embed_episodes(self.backbone.feature_maps, episodes)
        return self._scores(self._class_maps(support, episodes.support_y, episodes.ways), query)

    def predictive(self, episodes: Episodes) -> CategoricalPredictive:
        """The relation scores (sigmoids in [0, 1], not logits) normalized over the classes."""
        scores = self.query_logits(episodes).to(torch.float64) + RELATION_SCORE_FLOOR
        return CategoricalPredictive(scores / scores.sum(-1, keepdim=True))

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        scores = self.query_logits(episodes)
        targets = F.one_hot(episodes.query_y, episodes.ways).to(scores.dtype)
        accuracy = (scores.argmax(-1) == episodes.query_y).float().mean()
        return F.mse_loss(scores, targets), {"accuracy": float(accuracy)}
