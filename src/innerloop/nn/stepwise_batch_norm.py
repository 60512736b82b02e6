"""Per-inner-step batch-norm weights (MAML++ "BNWB", Antoniou, Edwards & Storkey, ICLR 2019).

A :class:`StepwiseTaskBatchNorm` holds ``num_sets`` (weight, bias) pairs and normalizes with the
current batch's statistics (as :class:`~innerloop.nn.task_batch_norm.TaskBatchNorm`). Which pair
is used is set by the enclosing ``with batch_norm_step(k):`` block: the network after ``k``
inner updates uses pair ``min(k, num_sets - 1)``. Outside any block, pair 0.

The inner loop does not adapt these weights; the outer loop learns one pair per step, so the
network can rescale its features as the inner loop moves the other weights.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from innerloop.nn.task_batch_norm import TaskBatchNorm, task_batch_norm

_step = threading.local()


@contextlib.contextmanager
def batch_norm_step(step: int) -> Iterator[None]:
    """Within the block, every :class:`StepwiseTaskBatchNorm` uses its weights for ``step``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    previous = getattr(_step, "value", 0)
    _step.value = step
    try:
        yield
    finally:
        _step.value = previous


def current_batch_norm_step() -> int:
    """The step set by the enclosing :func:`batch_norm_step` (0 outside any)."""
    return getattr(_step, "value", 0)


class StepwiseTaskBatchNorm(nn.Module):
    """Task batch norm with one learned (weight, bias) pair per inner step."""

    def __init__(self, num_features: int, num_sets: int, eps: float = 1e-5) -> None:
        super().__init__()
        if num_sets < 1:
            raise ValueError(f"num_sets must be >= 1, got {num_sets}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_sets, num_features))
        self.bias = nn.Parameter(torch.zeros(num_sets, num_features))

    @property
    def num_sets(self) -> int:
        return self.weight.shape[0]

    def forward(self, inputs: Tensor) -> Tensor:
        index = min(getattr(_step, "value", 0), self.num_sets - 1)
        return task_batch_norm(inputs, self.weight[index], self.bias[index], self.eps)


def make_batch_norm_stepwise(module: nn.Module, num_sets: int) -> list[str]:
    """Replace every :class:`TaskBatchNorm` inside ``module`` by a :class:`StepwiseTaskBatchNorm`
    whose pairs all start from its weights; returns the qualified names of the replaced modules."""
    replaced = []
    for name, child in list(module.named_modules()):
        for child_name, grandchild in list(child.named_children()):
            if isinstance(grandchild, TaskBatchNorm):
                stepwise = StepwiseTaskBatchNorm(grandchild.weight.shape[0], num_sets, grandchild.eps)
                stepwise = stepwise.to(grandchild.weight)  # the original's dtype and device
                with torch.no_grad():
                    stepwise.weight.copy_(grandchild.weight.expand_as(stepwise.weight))
                    stepwise.bias.copy_(grandchild.bias.expand_as(stepwise.bias))
                setattr(child, child_name, stepwise)
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
