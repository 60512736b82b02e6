"""Episodes: the support/query batches that every meta-learner consumes.

An :class:`Episodes` batch has a leading task dimension ``T``: ``support_x [T, S, ...]``,
``support_y [T, S]``, ``query_x [T, Q, ...]``, ``query_y [T, Q]``, labels remapped to
``0..ways-1`` and the original class ids kept in ``class_ids [T, ways]`` (label ``k`` of task
``t`` is split class ``class_ids[t, k]``). Support examples are ordered by label, ``shots`` per
label; query examples likewise, ``queries`` per label. One :class:`Episode` is the same without
``T``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
class Episodes:
    """A batch of ``num_tasks`` episodes with the same ways, shots and queries."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int
    shots: int
    queries: int
    class_ids: Tensor

    @property
    def num_tasks(self) -> int:
        return int(self.support_x.shape[0])

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, task: int) -> Episode:
        return Episode(self.support_x[task], self.support_y[task], self.query_x[task],
                       self.query_y[task], self.ways, self.shots, self.queries,
                       self.class_ids[task])

    def to(self, device: str) -> Episodes:
        return Episodes(self.support_x.to(device), self.support_y.to(device),
                        self.query_x.to(device), self.query_y.to(device), self.ways,
                        self.shots, self.queries, self.class_ids)

    def slice(self, start: int, stop: int) -> Episodes:
        """Tasks ``start..stop-1`` (used to split a meta-batch across ranks or chunks)."""
        return Episodes(self.support_x[start:stop], self.support_y[start:stop],
                        self.query_x[start:stop], self.query_y[start:stop], self.ways,
                        self.shots, self.queries, self.class_ids[start:stop])
