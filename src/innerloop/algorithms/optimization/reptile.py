"""Reptile (Nichol, Achiam & Schulman, 2018): move the initialization towards adapted weights.

Inner loop, for each task: ``num_steps`` steps of the inner optimizer (Adam with ``beta1 = 0`` in
the paper) on minibatches of the support set, from ``params`` to ``adapted_t``. Outer update:

    params <- params + outer_lr * mean_t (adapted_t - params)

Reptile is not the gradient of a query loss, so ``meta_loss`` returns the surrogate

    surrogate = 1/2 * sum_name || params[name] - mean_t adapted_t[name] ||^2

with ``adapted_t`` held constant; its gradient is ``params - mean_t adapted_t``, so one step of
plain SGD with rate ``outer_lr`` (``optim.name: sgd``, ``momentum: 0``, ``weight_decay: 0``, no
``grad_clip``, as in the recipes) is exactly the Reptile update, and the Trainer treats Reptile
like every other method (the paper anneals ``outer_lr`` linearly to 0: ``optim.schedule:
linear``). Other outer optimizers apply their own rule to the same direction, as the Reptile
paper's Adam variant does.
No meta-gradient flows through the inner loop, so it always runs first order. The query set is
only used to log the adapted learner's query score (accuracy or MSE), on the first task of the meta-batch (an
unbiased estimate at a fraction of the cost: non-transductive prediction runs ``support + 1``
images per query).
"""

from __future__ import annotations

import torch
from torch import Tensor

from innerloop.algorithms.optimization.gradient_learner import GradientLearner
from innerloop.tasks.episodes import Episodes


class Reptile(GradientLearner):
    """Reptile: the surrogate's gradient is ``params - mean_t adapted_t``."""

    name = "reptile"
    default_adapt = "all"
    differentiates_inner_loop = False

    @property
    def gradient_flow(self) -> str:
        return "no meta-gradient through the inner loop (surrogate update)"

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        adapted_sum: dict[str, Tensor] = {}
        with torch.no_grad():  # the inner loop runs first order; nothing is kept for backward
            for t in range(episodes.num_tasks):
                episode = episodes[t]
                state = self.adapt(episode.support_x, episode.support_y, episodes.ways)
                for name, tensor in state.params.items():
                    adapted_sum[name] = adapted_sum.get(name, 0) + tensor
                if t == 0:
                    outputs = self.predict(state, episode.query_x)
                    if self.task == "classification":
                        score = (outputs.argmax(-1) == episode.query_y).float().mean()
                    else:
                        score = (outputs - episode.query_y).pow(2).mean()
        surrogate = sum(
            0.5 * (parameter - adapted_sum[name] / episodes.num_tasks).pow(2).sum()
            for name, parameter in self.network.named_parameters()
        )
        return surrogate, {self.metric_name: float(score)}
