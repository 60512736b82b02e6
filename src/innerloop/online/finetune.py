"""Naive online fine-tuning: the baseline that OML and FTML are measured against.

The same :class:`~innerloop.online.network.OnlineNetwork`, either pretrained by ordinary
supervised learning on the background classes (``supervised_loss``: cross-entropy of
``network(images)`` against background-class labels, minimized by any optimizer) or left at its
random initialization ("from scratch"). On the stream every weight — representation and head —
takes one plain SGD step per image (or small batch), as OML's PLN does, so both make the same
number of updates on the same images:

    stream_params = stream_params - online_lr * grad(cross_entropy(
        run(network, stream_params, batch_x[step]), batch_y[step]))

(:class:`~innerloop.online.online_sgd.OnlineSGDLearner` with the ``all`` filter). Nothing
protects earlier classes, so this is the learner that shows catastrophic forgetting.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from innerloop.functional import parameter_filter
from innerloop.online.network import OnlineNetwork
from innerloop.online.online_sgd import OnlineSGDLearner


class NaiveFineTuning(OnlineSGDLearner):
    """Supervised pretraining (optional), then online SGD on all weights (module docstring)."""

    name = "finetune"

    def __init__(self, network: OnlineNetwork, online_lr: float = 0.01, online_batch_size: int = 1,
                 name: str = "finetune") -> None:
        super().__init__(network, online_lr, parameter_filter("all"), online_batch_size)
        self.name = name

    def supervised_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Pretraining objective: cross-entropy over the background classes, and the accuracy."""
        logits = self.network(images)
        loss = F.cross_entropy(logits, labels)
        return loss, {"loss": float(loss.detach()),
                      "accuracy": float((logits.argmax(dim=1) == labels).float().mean())}
