"""The :class:`MetaLearner` contract that every method implements.

Every meta-learner is an inner loop that turns a support set into a predictor (``adapt``), the
predictor itself (``predict``), and an outer objective over a batch of tasks (``meta_loss``).
The Trainer and the evaluation protocol only ever call these, so a new method plugs in by
implementing them.

Two choices differ from the first sketch in DESIGN.md, on purpose:

* ``adapt`` receives ``ways``: labels are ``0..ways-1``, but inferring ``ways`` from
  ``support_y.max() + 1`` is a data-dependent shape that ``torch.func.vmap`` cannot trace, and
  it is wrong for a support set that happens to miss its last class.
* the default ``query_logits`` adapts to the tasks one after another rather than under
  ``torch.func.vmap``: on a CPU the loop is faster for Conv-4 (``benchmarks/maml_speed.py``).
  Gradient-based methods offer the vmapped path as an option (``vectorize``), and every method
  may override ``query_logits`` with a batched path (ProtoNet embeds all tasks' images in one
  call). Tests check that the paths agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from innerloop.algorithms.predictive import CategoricalPredictive, Predictive
from innerloop.tasks.episodes import Episodes


class MetaLearner(nn.Module):
    """Base class of all meta-learners.

    Class attributes:
        name: registry name (``innerloop list`` shows it).
        transductive: True when predictions for one query depend on the other queries (for
            example BatchNorm in training mode at test time); evaluation reports print it.
        backbone_batch_norm: which BatchNorm the backbone is built with: ``"running"`` for
            methods trained by ordinary backpropagation, ``"task"`` (per-task batch statistics,
            no buffers) for methods that run the backbone through ``torch.func``.
        metric_name, higher_is_better: the per-episode score of :meth:`episode_metric`
            (validation keeps the checkpoint that scores best).
        backbone_options: extra keyword arguments of the backbone (Relation Networks keep
            feature maps unpooled).
        fixed_ways: True when the learner has one output unit per label and so is evaluated
            with the ways it was trained with (sequence models, gradient-based heads).
        adaptation: what adapting to one task costs, in passes; evaluation reports print it.
        task_kinds: the dataset kinds the method handles (``classification``, ``regression``);
            a regression learner sets ``metric_name = "mse"`` and ``higher_is_better = False``.
    """

    name: str = "metalearner"
    transductive: bool = False
    backbone_batch_norm: str = "running"  # the backbone's BatchNorm kind (see innerloop.nn.conv4)
    metric_name: str = "accuracy"  # what episode_metric returns, per task
    higher_is_better: bool = True
    backbone_options: dict[str, Any] = {}
    fixed_ways: bool = False
    adaptation: str = "one forward pass of the support set"
    task_kinds: tuple[str, ...] = ("classification",)

    @classmethod
    def from_config(cls, backbone: nn.Module, config: Any) -> MetaLearner:
        """The learner on ``backbone`` with the options of ``config`` (a
        :class:`~innerloop.config.Config`); methods with options override it."""
        return cls(backbone)

    def adaptation_cost(self) -> str:
        """What adapting to one task costs, as evaluation reports state it."""
        return self.adaptation

    def set_training_step(self, step: int) -> None:
        """Called by the Trainer before outer step ``step`` (0-based). Methods whose objective
        follows a schedule over training (MAML++) override it; the state must be a function
        of ``step`` alone, so a resumed run continues exactly."""

    def adapt(self, support_x: Tensor, support_y: Tensor, ways: int) -> Any:
        """The inner loop for one task: support set → task state."""
        raise NotImplementedError

    def predict(self, state: Any, query_x: Tensor) -> Tensor:
        """The adapted predictor: task state and queries → logits ``[Q, ways]``."""
        raise NotImplementedError

    def query_logits(self, episodes: Episodes) -> Tensor:
        """Logits ``[T, Q, ways]`` for every query of every task.

        The default adapts to each task in turn; methods override it with a batched path that
        computes the same numbers.
        """
        return torch.stack([
            self.predict(self.adapt(episode.support_x, episode.support_y, episodes.ways),
                         episode.query_x)
            for episode in (episodes[t] for t in range(episodes.num_tasks))
        ])

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """Outer objective: mean query cross-entropy over tasks, and the query accuracy."""
        return self._classification_loss(self.query_logits(episodes), episodes)

    @staticmethod
    def _classification_loss(logits: Tensor, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        loss = F.cross_entropy(logits.flatten(0, 1), episodes.query_y.flatten())
        accuracy = (logits.argmax(-1) == episodes.query_y).float().mean()
        return loss, {"accuracy": float(accuracy)}

    def predictive(self, episodes: Episodes) -> Predictive:
        """What the adapted learner believes about every query (see
        :mod:`~innerloop.algorithms.predictive`): by default the softmax of ``query_logits``.
        Regression learners and methods that sample override it."""
        return CategoricalPredictive.from_logits(self.query_logits(episodes))

    def episode_metric(self, episodes: Episodes) -> Tensor:
        """The score of each task (float64 ``[T]``): by default its query accuracy; for a
        regression learner (``metric_name == "mse"``) the squared error of the predictive mean."""
        if self.metric_name == "mse":
            mean = self.predictive(episodes).mean
            return (mean - episodes.query_y.reshape(mean.shape)).square().mean(1).to(torch.float64)
        logits = self.query_logits(episodes)
        accuracy = (logits.argmax(-1) == episodes.query_y).to(torch.float64).mean(dim=1)
        finite = torch.isfinite(logits).flatten(1).all(dim=1)  # a diverged task scores nan, not chance
        return torch.where(finite, accuracy, torch.full_like(accuracy, float("nan")))


def embed_episodes(backbone: Callable[[Tensor], Tensor], episodes: Episodes) -> tuple[Tensor, Tensor]:
    """All tasks' support and query images through ``backbone`` in one call.

    Returns ``support [T, S, ...]`` and ``query [T, Q, ...]`` (the backbone's output shape after
    the batch dimension). BatchNorm in training mode therefore normalizes over the whole
    meta-batch, as one large batch of ordinary training would.
    """
    num_tasks, num_support = episodes.support_y.shape
    images = torch.cat([episodes.support_x.flatten(0, 1), episodes.query_x.flatten(0, 1)])
    embeddings = backbone(images)
    support = embeddings[: num_tasks * num_support].unflatten(0, (num_tasks, num_support))
    query = embeddings[num_tasks * num_support:].unflatten(0, (num_tasks, -1))
    return support, query
