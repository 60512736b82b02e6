"""Images of a class split with their split-class labels, for training before a stream.

OML's trajectories and remembered batches and the naive baseline's supervised pretraining label
images by their class in the (background) split — the rows of an output layer with one row per
split class — rather than ``0..ways-1`` as episodes do. :class:`ClassBatches` draws them with the
library's seeded vectorized sampler (:class:`~innerloop.tasks.sampler.EpisodeSampler`): distinct
random classes, distinct random images of each, class by class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from innerloop.data.store import ClassSplit
from innerloop.tasks.sampler import EpisodeSampler


def subset(split: ClassSplit, classes: Tensor, name: str) -> ClassSplit:
    """The classes ``classes`` (indices into ``split``) of ``split`` as a split of their own."""
    return ClassSplit(split.store, name, split.base_classes[classes], split.quarter_turns[classes])


class ClassBatches:
    """Seeded batches of ``(images, split-class labels)`` from ``split``."""

    def __init__(self, split: ClassSplit) -> None:
        self.split = split
        self._samplers: dict[tuple[int, int], EpisodeSampler] = {}

    def sample(self, num_classes: int, shots: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``num_classes`` distinct random classes, ``shots`` images each, class by class:
        images ``[num_classes * shots, C, H, W]`` and their classes' indices in the split."""
        key = (num_classes, shots)
        if key not in self._samplers:
            self._samplers[key] = EpisodeSampler(self.split, num_classes, shots, 0)
        sampler = self._samplers[key]
        indices = sampler.sample_indices(1, generator)
        episode = sampler.gather(indices)[0]
        return episode.support_x, indices.class_ids[0][episode.support_y]
