"""Seeded, vectorized N-way K-shot sampling by tensor indexing.

For a meta-batch of ``T`` tasks, :meth:`EpisodeSampler.sample_indices` draws

* ``ways`` distinct classes per task: the ``ways`` largest of ``C`` independent uniform keys
  (``torch.rand(T, C).topk``), a uniformly random ``ways``-subset in random order;
* ``shots + queries`` distinct examples per chosen class: the first entries of a random
  permutation of that class's examples (positions past a class's count are pushed last);

and :meth:`EpisodeSampler.gather` turns those indices into images with one index operation and,
for rotated classes, one ``torch.gather`` that permutes each image's pixels. No Python loop runs over tasks or images. All randomness comes from the
``torch.Generator`` passed in, so the same seed gives the same episodes on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.data.store import ClassSplit
from innerloop.errors import TaskError
from innerloop.tasks.episodes import Episodes


@dataclass(frozen=True)
class EpisodeIndices:
    """Which split classes and which store rows make up a batch of episodes."""

    class_ids: Tensor  # int64 [T, ways], indices into the split's classes
    rows: Tensor  # int64 [T, ways, shots + queries], rows of the store's images

    def slice(self, start: int, stop: int) -> EpisodeIndices:
        return EpisodeIndices(self.class_ids[start:stop], self.rows[start:stop])


class EpisodeSampler:
    """Draws :class:`Episodes` of a fixed shape from a :class:`ClassSplit`.

    Args:
        split: the classes to sample from.
        ways: classes per task (labels ``0..ways-1``).
        shots: support examples per class.
        queries: query examples per class.

    Raises:
        TaskError: when the split has fewer than ``ways`` classes, or a class has fewer than
            ``shots + queries`` examples.
    """

    def __init__(self, split: ClassSplit, ways: int, shots: int, queries: int) -> None:
        check_episode_shape(split.name, split.num_classes, split.min_examples_per_class,
                            ways, shots, queries)
        self.split = split
        self.ways, self.shots, self.queries = ways, shots, queries
        store = split.store
        self._offsets = store.class_offsets[split.base_classes]
        self._counts = store.class_counts[split.base_classes]
        self._max_count = int(self._counts.max())
        # A store of floating-point feature vectors [N, D] (embedded texts) is served as it is:
        # no rotation, no channel axis, no scaling.
        self._features = store.images.is_floating_point()
        if self._features:
            if bool((split.quarter_turns != 0).any()):
                raise TaskError(f"split '{split.name}' rotates feature vectors; rotations apply to "
                                f"image datasets only (set data.rotations: [0])")
            return
        height, width = store.images.shape[-2:]
        if height != width and bool((split.quarter_turns % 2 == 1).any()):
            raise TaskError(f"split '{split.name}' rotates non-square {height}x{width} images by 90 "
                            f"degrees; use rotations of 0 and 180 only")
        pixels = torch.arange(height * width).view(height, width)
        # _pixel_order[k]: flat pixel indices of an image rotated by k quarter turns (odd k
        # only for square images, checked above).
        self._pixel_order = torch.stack([
            torch.rot90(pixels, k, dims=(0, 1)).reshape(-1) if height == width or k % 2 == 0
            else pixels.reshape(-1) for k in range(4)])

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> EpisodeIndices:
        """Draw the classes and example rows of ``num_tasks`` episodes."""
        num_classes = self.split.num_classes
        per_class = self.shots + self.queries
        # float64 keys: ties, whose order is implementation-defined, have probability ~1e-9.
        keys = torch.rand(num_tasks, num_classes, generator=generator, dtype=torch.float64)
        class_ids = keys.topk(self.ways, dim=1).indices
        keys = torch.rand(num_tasks, self.ways, self._max_count, generator=generator, dtype=torch.float64)
        counts = self._counts[class_ids]  # [T, ways]
        beyond = torch.arange(self._max_count) >= counts.unsqueeze(-1)
        keys = keys.masked_fill(beyond, 2.0)  # positions past the class's count sort last
        positions = keys.argsort(dim=-1)[..., :per_class]
        rows = self._offsets[class_ids].unsqueeze(-1) + positions
        return EpisodeIndices(class_ids=class_ids, rows=rows)

    def gather(self, indices: EpisodeIndices) -> Episodes:
        """Turn indices into float images in ``[0, 1]`` with a channel axis, rotated per class
        (feature vectors: the stored vectors)."""
        if self._features:
            examples = self.split.store.images[indices.rows]  # [T, ways, per_class, D]
            return self._episodes(examples[:, :, :self.shots].flatten(1, 2),
                                  examples[:, :, self.shots:].flatten(1, 2), indices)
        images = self.split.store.images[indices.rows]  # [T, ways, per_class, (C,) H, W] uint8
        turns = self.split.quarter_turns[indices.class_ids]  # [T, ways]
        if bool((turns != 0).any()):
            shape = images.shape
            flat = images.reshape(*shape[:3], -1, shape[-2] * shape[-1])  # [T, ways, per_class, C, H*W]
            order = self._pixel_order[turns][:, :, None, None, :].expand_as(flat)
            images = torch.gather(flat, -1, order).reshape(shape)
        if images.dim() == 5:  # single-channel store: add the channel axis
            images = images.unsqueeze(3)
        return self._episodes(to_unit_float(images[:, :, :self.shots].flatten(1, 2)),
                              to_unit_float(images[:, :, self.shots:].flatten(1, 2)), indices)

    def _episodes(self, support_x: Tensor, query_x: Tensor, indices: EpisodeIndices) -> Episodes:
        num_tasks = support_x.shape[0]
        labels = torch.arange(self.ways)
        return Episodes(
            support_x=support_x,
            support_y=labels.repeat_interleave(self.shots).expand(num_tasks, -1).contiguous(),
            query_x=query_x,
            query_y=labels.repeat_interleave(self.queries).expand(num_tasks, -1).contiguous(),
            ways=self.ways, shots=self.shots, queries=self.queries,
            class_ids=indices.class_ids,
        )

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes:
        """Draw a meta-batch of ``num_tasks`` episodes."""
        return self.gather(self.sample_indices(num_tasks, generator))


def to_unit_float(images: Tensor) -> Tensor:
    """``uint8`` in ``0..255`` → ``float32`` in ``[0, 1]``."""
    return images.to(torch.float32).div_(255.0)


def check_episode_shape(split_name: str, num_classes: int, min_examples: int,
                        ways: int, shots: int, queries: int) -> None:
    """Raise :class:`TaskError` naming the numbers when an episode shape cannot be served."""
    if ways < 1 or shots < 1 or queries < 0:
        raise TaskError(f"ways and shots must be >= 1 and queries >= 0; got ways={ways}, "
                        f"shots={shots}, queries={queries}")
    if ways > num_classes:
        raise TaskError(f"{ways}-way episodes need {ways} classes but split '{split_name}' has "
                        f"{num_classes}; lower ways to at most {num_classes}")
    if shots + queries > min_examples:
        raise TaskError(f"shots + queries = {shots} + {queries} = {shots + queries} examples per class, "
                        f"but split '{split_name}' has classes with only {min_examples}; "
                        f"lower shots + queries to at most {min_examples}")
