"""ANIL — Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

MAML with the inner loop restricted to the head: for each task,

    adapted[head] = params[head];  adapted[body] = params[body]
    repeat num_steps:  adapted[head] = adapted[head] - inner_lr * grad_head(support_loss)(adapted)

and the outer loop minimises ``mean_t query_loss(adapted_t)`` over all of ``params``; the body
is only learned by the outer loop. The restriction is the ``head`` parameter filter of the
functional core, so everything else (orders, optimizers, vmap) is MAML's code; the body's
features are computed once per task instead of once per inner step.
"""

from __future__ import annotations

from innerloop.algorithms.optimization.gradient_learner import GradientLearner


class ANIL(GradientLearner):
    """ANIL: only the linear head adapts in the inner loop."""

    name = "anil"
    default_adapt = "head"
