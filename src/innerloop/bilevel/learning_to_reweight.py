"""Learning to reweight examples for robust training (Ren, Zeng, Yang, Urtasun, ICML 2018).

Every training step weighs the examples of the noisy minibatch by how much a small step on
each of them would lower the loss on a small *clean* validation batch — a one-step bilevel
problem solved through :mod:`innerloop.bilevel`:

    inner_loss(weights, h)   = sum_i h["example_weights"][i] * loss_i(weights)     (noisy batch)
    lookahead                = weights - inner_lr * grad_weights inner_loss         (GradientDescent(1, SGD))
    outer_loss(lookahead, h) = mean_j clean_loss_j(lookahead)                       (clean batch)
    example_weights          = max(-d outer_loss / d h at h = 0, 0), normalised to sum 1
                               (all zero when no example helps)

At ``h = 0`` the hyper-gradient is ``-inner_lr * grad clean_loss . grad loss_i``: an example is
kept in proportion to how well its gradient agrees with the clean one, so a mislabelled
example, whose gradient points away, gets weight 0. The model is then updated with the
weighted loss by the caller's optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from innerloop.bilevel.problem import BilevelProblem, GradientDescent
from innerloop.bilevel.unrolled import Unrolled
from innerloop.functional.inner_optimizers import SGD
from innerloop.functional.params import Params

PerExampleLoss = Callable[[Params, Tensor, Tensor], Tensor]
"""``per_example_loss(weights, inputs, labels) -> [B]`` losses (e.g. cross-entropy, reduction none)."""


def example_weights(per_example_loss: PerExampleLoss, weights: Params, noisy_x: Tensor, noisy_y: Tensor,
                    clean_x: Tensor, clean_y: Tensor, inner_lr: float = 0.1) -> Tensor:
    """Weights ``[B]`` (non-negative, summing to 1 or all zero) for the noisy batch ``noisy_x, noisy_y``."""
    if noisy_x.shape[0] != noisy_y.shape[0] or clean_x.shape[0] != clean_y.shape[0]:
        raise ValueError(f"inputs and labels disagree in length: {noisy_x.shape[0]} vs {noisy_y.shape[0]} "
                         f"(noisy), {clean_x.shape[0]} vs {clean_y.shape[0]} (clean)")
    if clean_x.shape[0] == 0:
        raise ValueError("the clean batch is empty: learning to reweight needs clean validation examples")
    problem = BilevelProblem(
        inner_loss=lambda w, h: (h["example_weights"] * per_example_loss(w, noisy_x, noisy_y)).sum(),
        outer_loss=lambda w, h: per_example_loss(w, clean_x, clean_y).mean(),
        solver=GradientDescent(1, SGD(inner_lr)),
    )
    reference = next(iter(weights.values()))
    zeros = {"example_weights": torch.zeros(noisy_x.shape[0], dtype=reference.dtype, device=reference.device)}
    gradient = Unrolled(measure_stationarity=False).hypergradient(problem, weights, zeros).gradient["example_weights"]
    kept = torch.clamp(-gradient, min=0)
    total = kept.sum()
    return kept / total if total > 0 else kept
