"""BOIL — Body Only update in Inner Loop (Oh, Yoo, Kim & Yun, ICLR 2021).

The mirror image of ANIL: for each task the head is frozen and only the body adapts,

    adapted[head] = params[head];  adapted[body] = params[body]
    repeat num_steps:  adapted[body] = adapted[body] - inner_lr * grad_body(support_loss)(adapted)

and the outer loop minimises ``mean_t query_loss(adapted_t)`` over all of ``params``. Freezing
the head forces the inner loop to move the features (representation change) rather than the
decision boundary. It is the ``body`` parameter filter of the functional core; everything else
(orders, inner optimizers, vmap) is MAML's code.
"""

from __future__ import annotations

from innerloop.algorithms.optimization.gradient_learner import GradientLearner


class BOIL(GradientLearner):
    """BOIL: only the body adapts in the inner loop; the head is meta-learned only."""

    name = "boil"
    default_adapt = "body"
