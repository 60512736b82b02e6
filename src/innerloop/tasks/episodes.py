"""Episodes: the support/query batches that every meta-learner consumes.

An :class:`Episodes` batch has a leading task dimension ``T``: ``support_x [T, S, ...]``,
``support_y [T, S]``, ``query_x [T, Q, ...]``, ``query_y [T, Q]``, labels remapped to
``0..ways-1`` and the original class ids kept in ``class_ids [T, ways]`` (label ``k`` of task
``t`` is split class ``class_ids[t, k]``). The sampler orders support examples by label,
``shots`` per label, and query examples likewise, ``queries`` per label. Learners must not rely on
that layout for the support set: robustness evaluation (:mod:`innerloop.evaluate.robustness`)
hands them noisy labels in any order and classes with fewer examples than ``shots`` (which then
is the nominal count); per-label quantities are computed from ``support_y`` (one-hot sums,
:func:`occurrence_index`). One :class:`Episode` is the same without ``T``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Episode:
    """One task: a support set to adapt on and a query set to be scored on."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int
    queries: int
    class_ids: Tensor


@dataclass(frozen=True)
class Episodes(Episode):
    """A batch of ``num_tasks`` episodes with the same ways, shots and queries.

    The fields are those of :class:`Episode` with a leading task dimension.
    """

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def __len__(self) -> int:
        return self.num_tasks

    def _map(self, function: Callable[[Tensor], Tensor], cls: type[Episode]) -> Episode:
        return cls(function(self.support_x), function(self.support_y), function(self.query_x),
                   function(self.query_y), self.ways, self.shots, self.queries,
                   function(self.class_ids))

    def __getitem__(self, task: int) -> Episode:
        if not isinstance(task, int):
            raise TypeError(f"index Episodes with an int task number; use .slice(start, stop) for "
                            f"several tasks, got {task!r}")
        return self._map(lambda tensor: tensor[task], Episode)

    def to(self, device: str | torch.device) -> Episodes:
        return self._map(lambda tensor: tensor.to(device), Episodes)

    def slice(self, start: int, stop: int) -> Episodes:
        """Tasks ``start..stop-1`` (used to split a meta-batch across ranks or chunks)."""
        return self._map(lambda tensor: tensor[start:stop], Episodes)


def occurrence_index(labels: Tensor, ways: int) -> Tensor:
    """How many earlier examples (along the last axis) share each example's label: 0 for the
    first example of a label, 1 for the second, ... ``labels [..., S]`` → int64 ``[..., S]``.
    No data-dependent shapes, so it also runs under ``torch.func.vmap``."""
    same_label = labels.unsqueeze(-1) == torch.arange(ways, device=labels.device)  # [..., S, ways]
    earlier = same_label.cumsum(dim=-2) - same_label.long()
    return (earlier * same_label).sum(dim=-1)
