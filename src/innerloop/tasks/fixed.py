"""Fixed, seeded evaluation episodes so that every method is scored on exactly the same tasks.

All ``num_episodes`` episodes are drawn at construction from one generator seeded with ``seed``;
batches are then slices of that list, so episode ``i`` does not depend on the batch size used to
evaluate it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from typing import Any, Protocol

from innerloop.tasks.episodes import Episodes


class TaskSampler(Protocol):
    """What fixed episodes need from a sampler: a small plan of episodes, then their tensors.

    The plan (``EpisodeIndices`` for images, task parameters for regression) has
    ``slice(start, stop)``; ``gather(plan)`` builds the :class:`Episodes`.
    """

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> Any: ...

    def gather(self, indices: Any) -> Episodes: ...

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes: ...


class FixedEpisodes:
    """``num_episodes`` episodes of ``sampler``'s shape, fixed by ``seed``."""

    def __init__(self, sampler: TaskSampler, num_episodes: int, seed: int) -> None:
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
        self.sampler = sampler
        self.num_episodes = num_episodes
        self.seed = seed
        self.indices = sampler.sample_indices(num_episodes, torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.num_episodes

    def batches(self, batch_size: int) -> Iterator[Episodes]:
        """Yield the episodes in order, ``batch_size`` at a time."""
        for start in range(0, self.num_episodes, batch_size):
            stop = min(start + batch_size, self.num_episodes)
            yield self.sampler.gather(self.indices.slice(start, stop))
