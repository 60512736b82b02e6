"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), and first-order MAML.

Inner loop, for each task, from the meta-parameters ``params`` (all of the network):

    adapted = params
    repeat num_steps:  adapted = adapted - inner_lr * grad(support_loss)(adapted)

Outer loop: minimise ``mean_t query_loss(adapted_t)`` with respect to ``params``. With
``order="second"`` (the default) the meta-gradient differentiates through the inner gradients
(Hessian-vector products); with ``order="first"`` (first-order MAML, "FOMAML" in the paper's
section 5.2) the inner gradients are treated as constants, so the meta-gradient of a task is
``grad(query_loss)(adapted_t)``.

As in the paper's evaluation, BatchNorm uses the statistics of the current batch at test time
too, so the default prediction is transductive (``transductive=False`` normalizes each query
with the support set instead).
"""

from __future__ import annotations

from innerloop.algorithms.optimization.gradient_learner import GradientLearner


class MAML(GradientLearner):
    """MAML: the whole network adapts by SGD; ``order`` picks second or first order."""

    name = "maml"
    default_adapt = "all"
