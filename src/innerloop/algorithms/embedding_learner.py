"""The shape most metric- and model-based learners share: embed, then a function of the embeddings.

Such a learner embeds the support and query images with its backbone (all tasks of a meta-batch
in one call) and computes the logits from the embeddings alone:
:meth:`EmbeddingLearner.logits_from_embeddings` is the method. ``adapt`` keeps the support
embeddings; ``predict`` applies the method to them; ``query_logits`` is the batched path.

Learners with ``fixed_ways`` have one output (or one label input) per label and check that an
episode has the ways they were built for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner, embed_episodes
from innerloop.errors import TaskError
from innerloop.tasks.episodes import Episodes


class EmbeddingLearner(MetaLearner):
    """Base class: a backbone and a method over support/query embeddings."""

    def __init__(self, backbone: nn.Module, ways: int | None = None) -> None:
        super().__init__()
        if self.fixed_ways and (ways is None or ways < 2):
            raise ValueError(f"{type(self).__name__} has one output per label: pass ways >= 2, got {ways}")
        self.backbone = backbone
        self.ways = ways

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> EmbeddingLearner:
        return cls(backbone, ways=config.train.ways) if cls.fixed_ways else cls(backbone)

    def check_ways(self, ways: int) -> None:
        if self.fixed_ways and ways != self.ways:
            raise TaskError(f"{self.name} was built for {self.ways}-way tasks (one output per label) "
                            f"and got a {ways}-way episode; evaluate with --ways {self.ways} or train "
                            f"a {ways}-way model")

    def logits_from_embeddings(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        """``support [T, S, D]``, ``support_y [T, S]``, ``query [T, Q, D]`` → logits ``[T, Q, ways]``."""
        raise NotImplementedError

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> tuple[Tensor, Tensor, int]:
        self.check_ways(ways)
        return self.backbone(support_x), support_y, ways

    def predict(self, state: tuple[Tensor, Tensor, int], query_x: Tensor) -> Tensor:
        support, support_y, ways = state
        return self.logits_from_embeddings(support[None], support_y[None], self.backbone(query_x)[None], ways)[0]

    def query_logits(self, episodes: Episodes) -> Tensor:
        self.check_ways(episodes.ways)
        support, query = embed_episodes(self.backbone, episodes)
        return self.logits_from_embeddings(support, episodes.support_y, query, episodes.ways)


def shuffle_support(episodes: Episodes, generator: torch.Generator | None = None) -> Episodes:
    """The same episodes with each task's support examples in a random order (for sequence
    models, which must not learn the sampler's label-sorted order)."""
    order = torch.argsort(torch.rand(episodes.support_y.shape, generator=generator), dim=1)
    image_order = order.view(*order.shape, *[1] * (episodes.support_x.dim() - 2)).expand_as(episodes.support_x)
    return Episodes(torch.gather(episodes.support_x, 1, image_order), torch.gather(episodes.support_y, 1, order),
                    episodes.query_x, episodes.query_y, episodes.ways, episodes.shots, episodes.queries,
                    episodes.class_ids)
