"""OML: Online-aware Meta-Learning (Javed & White, NeurIPS 2019, "Meta-Learning Representations
for Continual Learning").

The network is a representation learning network (RLN, ``network.body``) followed by a
prediction learning network (PLN, ``network.head``). Online, only the PLN learns, by plain SGD on
one image at a time; the RLN is frozen (:class:`~innerloop.online.online_sgd.OnlineSGDLearner`
with the ``head`` filter). Meta-training (on the background classes) learns an RLN and a PLN
initialization for which such online updates learn new classes without forgetting old ones.

One meta-training trajectory: the images ``trajectory_x`` of one (or a few) classes, shown in
order, and a batch ``remember_x`` of images of random classes. With
``trajectory_features = body(trajectory_x)`` computed once (the RLN does not change in the
inner loop):

    pln = head parameters, the trajectory classes' output weight rows and biases set to zero
    repeat for step in 0..len(trajectory)-1:               (one image per step, as online)
        pln = pln - inner_lr * grad(cross_entropy(head(pln, trajectory_features[step]),
                                                  trajectory_y[step]))
    meta_loss = cross_entropy(head(pln, [trajectory_features; body(remember_x)]),
                              [trajectory_y; remember_y])

and the meta-gradient flows through every inner step (second order) into the RLN and the PLN
initialization. The loss on the remembered classes is what penalizes interference: an
adaptation that learns the trajectory's class by overwriting other classes is punished. Resetting
the trajectory classes' outputs makes every trajectory a class being learned from scratch, as in
the stream. Ours sets both the output weight row and the output bias of each trajectory class to
zero (``reset_trajectory_classes``); the paper's reference implementation differs: it
re-initializes only the weight row, with a fresh kaiming-normal draw, and leaves the bias as it
is. With ours, a trajectory class's logit is 0 for every image before its first inner step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from innerloop.functional import ORDERS, SGD, inner_loop, parameter_filter, parameters_of
from innerloop.online.network import OUTPUT_BIAS, OUTPUT_WEIGHT, OnlineNetwork, head_logits
from innerloop.online.online_sgd import OnlineSGDLearner


class OML(OnlineSGDLearner):
    """OML: a meta-learned RLN (frozen online) and a PLN updated online by SGD (module docstring).

    Args:
        network: the RLN (``body``) and PLN (``head``); during meta-training its output layer has
            one row per background class.
        inner_lr: SGD rate of the PLN's inner steps during meta-training.
        online_lr: SGD rate of the PLN on the stream (OML's paper picks it per setting by search).
        order: ``"second"`` (the paper) or ``"first"`` (inner gradients as constants).
        reset_trajectory_classes: set the trajectory classes' output weight rows and biases to zero
            before the inner loop (the reference implementation instead redraws only the weight
            rows, kaiming-normal, and keeps the biases).
    """

    name = "oml"

    def __init__(self, network: OnlineNetwork, inner_lr: float = 0.03, online_lr: float = 0.03,
                 order: str = "second", reset_trajectory_classes: bool = True,
                 online_batch_size: int = 1) -> None:
        super().__init__(network, online_lr, parameter_filter("head"), online_batch_size)
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got '{order}'")
        self.inner_lr = inner_lr
        self.order = order
        self.reset_trajectory_classes = reset_trajectory_classes

    def adapt_pln(self, trajectory_features: Tensor, trajectory_y: Tensor) -> dict[str, Tensor]:
        """The PLN after one SGD step per trajectory image (the inner loop)."""
        pln = {name: tensor for name, tensor in parameters_of(self.network).items() if name.startswith("head.")}
        if self.reset_trajectory_classes:
            keep = torch.ones(pln[OUTPUT_WEIGHT].shape[0], dtype=pln[OUTPUT_WEIGHT].dtype)
            keep[trajectory_y.unique()] = 0.0
            pln[OUTPUT_WEIGHT] = pln[OUTPUT_WEIGHT] * keep.unsqueeze(1)
            pln[OUTPUT_BIAS] = pln[OUTPUT_BIAS] * keep

        def loss_fn(params: dict[str, Tensor], step: int) -> Tensor:
            return F.cross_entropy(head_logits(self.network, params, trajectory_features[step:step + 1]),
                                   trajectory_y[step:step + 1])

        return inner_loop(loss_fn, pln, list(pln), SGD(self.inner_lr), trajectory_y.numel(), self.order)

    def meta_loss(self, trajectory_x: Tensor, trajectory_y: Tensor, remember_x: Tensor,
                  remember_y: Tensor) -> tuple[Tensor, dict[str, float]]:
        """OML's outer loss of one trajectory (module docstring) and its accuracies.

        Labels index the rows of the network's output layer (the background classes).
        """
        trajectory_features = self.network.body(trajectory_x)
        remember_features = self.network.body(remember_x)
        adapted = self.adapt_pln(trajectory_features, trajectory_y)
        logits = head_logits(self.network, adapted, torch.cat([trajectory_features, remember_features]))
        labels = torch.cat([trajectory_y, remember_y])
        loss = F.cross_entropy(logits, labels)
        correct = (logits.argmax(dim=1) == labels).float().detach()
        return loss, {"loss": float(loss.detach()),
                      "trajectory_accuracy": float(correct[:trajectory_y.numel()].mean()),
                      "remember_accuracy": float(correct[trajectory_y.numel():].mean())}
