"""TADAM: task-dependent adaptive metric (Oreshkin, Rodríguez López & Lacoste, NeurIPS 2018).

Prototypical Networks with two additions:

* **metric scaling**: a learned temperature ``metric_scale`` on the squared Euclidean distance,
  ``logits[q, k] = -metric_scale * ||f(query_x[q] | c) - prototypes[k]||^2``;
* **task conditioning**: a task embedding ``c`` — the mean of the class prototypes computed by
  the unconditioned backbone (its BatchNorm normalizing with the task's own support-set
  statistics, so this pass neither reads nor updates the running statistics that the
  conditioned pass keeps) — drives a task-embedding network (TEN) that predicts a FiLM
  layer after each convolution's BatchNorm,

      h ← gamma * h + beta,   gamma = 1 + gamma_scale[b] * g_b(c),   beta = beta_scale[b] * h_b(c),

  where ``g_b, h_b`` are two-layer perceptrons of block ``b`` and the post-multipliers
  ``gamma_scale, beta_scale`` start at 0 (so training starts from the plain ProtoNet) and carry
  an L2 penalty of weight ``film_penalty`` in the loss, as in the paper.

The conditioned backbone then embeds the support set (prototypes) and the queries. Not
transductive: ``c`` comes from the support set alone.

Deviation: the paper also co-trains on an auxiliary 64-way classification task (for
miniImageNet); here TADAM trains on episodes only, like every method of the comparison.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.metric.protonet import class_means, negative_squared_distances
from innerloop.nn.task_batch_norm import task_batch_norm
from innerloop.tasks.episodes import Episodes


class TADAM(MetaLearner):
    """Prototypical Networks with a learned metric scale and FiLM task conditioning."""

    name = "tadam"
    adaptation = "two forward passes of the support set (task embedding, then conditioned prototypes)"

    def __init__(self, backbone: nn.Module, initial_metric_scale: float = 1.0,
                 film_penalty: float = 0.01) -> None:
        super().__init__()
        if not hasattr(backbone, "blocks"):
            raise TypeError("TADAM conditions each block of a Conv-4-style backbone (.blocks of "
                            "conv → norm → ReLU → pool); use innerloop.nn.Conv4")
        self.backbone = backbone
        dim = backbone.embedding_dim
        channels = [block[0].out_channels for block in backbone.blocks]
        self.log_metric_scale = nn.Parameter(torch.tensor(math.log(initial_metric_scale)))
        self.task_embedding_networks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 2 * width)) for width in channels)
        self.gamma_scale = nn.Parameter(torch.zeros(len(channels)))
        self.beta_scale = nn.Parameter(torch.zeros(len(channels)))
        self.film_penalty = film_penalty

    @property
    def metric_scale(self) -> Tensor:
        return self.log_metric_scale.exp()

    def task_embedding(self, support_x: Tensor, support_y: Tensor, ways: int) -> Tensor:
        """``c``: the mean prototype of the unconditioned backbone, ``[T, S, ...]`` → ``[T, D]``.

        BatchNorm uses each task's support-set statistics (the layers' affine weights, not their
        running statistics), in training and evaluation alike.
        """
        num_tasks, num_support = support_y.shape
        hidden = support_x.flatten(0, 1)
        for block in self.backbone.blocks:
            conv, norm, activation, pool = block
            hidden = conv(hidden)
            if isinstance(norm, nn.BatchNorm2d):
                hidden = task_batch_norm(hidden, norm.weight, norm.bias, norm.eps, num_groups=num_tasks)
            else:
                hidden = norm(hidden)
            hidden = pool(activation(hidden))
        plain = hidden.flatten(1).unflatten(0, (num_tasks, num_support))
        return class_means(plain, support_y, ways).mean(dim=1)

    def conditioned_embedding(self, images: Tensor, task_embedding: Tensor) -> Tensor:
        """``images [B, C, H, W]`` with ``task_embedding [B, D]`` (one row per image) → ``[B, D]``."""
        hidden = images
        for index, block in enumerate(self.backbone.blocks):
            conv, norm, activation, pool = block
            hidden = norm(conv(hidden))
            gamma_raw, beta_raw = self.task_embedding_networks[index](task_embedding).chunk(2, dim=-1)
            gamma = 1 + self.gamma_scale[index] * gamma_raw
            beta = self.beta_scale[index] * beta_raw
            hidden = pool(activation(gamma[:, :, None, None] * hidden + beta[:, :, None, None]))
        return hidden.flatten(1)

    def _logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """Batched over tasks: ``support_x [T, S, ...]``, ``query_x [T, Q, ...]`` → ``[T, Q, ways]``."""
        num_tasks, num_support = support_y.shape
        num_queries = query_x.shape[1]
        task_embedding = self.task_embedding(support_x, support_y, ways)  # [T, D]
        images = torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)])
        conditions = torch.cat([task_embedding.repeat_interleave(num_support, dim=0),
                                task_embedding.repeat_interleave(num_queries, dim=0)])
        embeddings = self.conditioned_embedding(images, conditions)
        support = embeddings[: num_tasks * num_support].unflatten(0, (num_tasks, num_support))
        query = embeddings[num_tasks * num_support:].unflatten(0, (num_tasks, num_queries))
        prototypes = class_means(support, support_y, ways)
        return self.metric_scale * negative_squared_distances(query, prototypes)

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor, int]:
        return support_x, support_y, ways

    def predict(self, state: tuple[Tensor, Tensor, int], query_x: Tensor) -> Tensor:
        support_x, support_y, ways = state
        return self._logits(support_x[None], support_y[None], query_x[None], ways)[0]

    def query_logits(self, episodes: Episodes) -> Tensor:
        return self._logits(episodes.support_x, episodes.support_y, episodes.query_x, episodes.ways)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        loss, metrics = self._classification_loss(self.query_logits(episodes), episodes)
        penalty = self.film_penalty * (self.gamma_scale.pow(2).sum() + self.beta_scale.pow(2).sum())
        return loss + penalty, metrics | {"metric_scale": float(self.metric_scale.detach())}
