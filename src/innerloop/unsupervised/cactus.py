"""CACTUs: meta-training tasks made from unlabeled images by clustering (Hsu, Levine & Finn,
"Unsupervised Learning via Meta-Learning", ICLR 2019).

Task construction, in the code's names:

1. ``embeddings = EMBEDDINGS[embedding](images)``: features of every unlabeled image
   (:mod:`innerloop.unsupervised.embeddings`; the paper used ACAI and BiGAN encoders, here PCA of
   blurred pixels, a random Conv-4 or a small autoencoder that train in minutes on a CPU).
2. ``partitions`` clusterings: partition ``p`` is ``kmeans(embeddings * scale_p, clusters)``
   with ``scale_0 = 1`` and, for ``p >= 1``, ``scale_p ~ U[0, 1]^D`` drawn per embedding
   dimension, as in the paper, so that the partitions differ in which directions they separate.
3. A task: a partition ``p`` uniformly at random, then ``ways`` distinct clusters of ``p`` among
   those with at least ``shots + queries`` images, and ``shots + queries`` distinct images of each;
   label ``k`` goes to the ``k``-th drawn cluster (a random order: a random label permutation).
   Each drawn cluster is also turned by a quarter-turn count drawn from ``rotations`` (all of
   its images alike), which needs no label: the same label-free augmentation that makes the
   supervised recipes' rotated classes (Santoro et al. 2016).

No label is read on this path: :class:`PseudoLabelTasks` sees only the images
(:func:`~innerloop.unsupervised.embeddings.unlabeled_images` drops the class structure) and the
cluster assignments. It has the sampler interface the Trainer uses (``sample_indices``,
``gather``, ``sample``), so every learner meta-trains on pseudo-labelled tasks unchanged: set
``data.pseudo_labels: cactus`` in a recipe (:func:`innerloop.build.build_training_sampler`);
validation and test episodes stay the real labelled ones.

Sampling is tensor indexing, as in :class:`~innerloop.tasks.sampler.EpisodeSampler`: partition
``p``'s images sorted by cluster are ``order[p]``, cluster ``c``'s are
``order[p, offsets[p, c] : offsets[p, c] + counts[p, c]]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from innerloop.data.paths import store_cache_dir
from innerloop.data.store import ClassSplit, atomic_torch_save
from innerloop.errors import InnerloopError, TaskError
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.sampler import to_unit_float
from innerloop.unsupervised.embeddings import EMBEDDINGS, unlabeled_images
from innerloop.unsupervised.kmeans import kmeans

PARTITIONS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CactusSettings:
    """How pseudo-labels are made (``cactus.*`` in a recipe)."""

    embedding: str = "pca"
    embedding_dim: int = 64
    blur_sigma: float = 1.5  # pca: Gaussian blur of the pixels, in pixels
    autoencoder_steps: int = 2000  # autoencoder: Adam steps of 128 images
    clusters: int = 500
    partitions: int = 50
    kmeans_iterations: int = 100
    seed: int = 0


def partition_seed(seed: int, partition: int) -> int:
    """A 63-bit seed for partition ``partition`` (its scaling and its k-means++ draws)."""
    digest = hashlib.sha256(f"innerloop-cactus:{seed}:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def embed(images: Tensor, settings: CactusSettings) -> Tensor:
    """``float32 [N, D]`` features of ``images`` by ``settings.embedding``."""
    if settings.embedding not in EMBEDDINGS:
        raise InnerloopError(f"cactus.embedding: '{settings.embedding}' is not one of {', '.join(EMBEDDINGS)}")
    return EMBEDDINGS[settings.embedding](images, dim=settings.embedding_dim, seed=settings.seed,
                                          blur_sigma=settings.blur_sigma,
                                          autoencoder_steps=settings.autoencoder_steps)


def cluster_partitions(embeddings: Tensor, settings: CactusSettings) -> Tensor:
    """``int64 [partitions, N]``: the cluster of every image in every partition (step 2)."""
    if settings.clusters > embeddings.shape[0]:
        raise InnerloopError(f"cactus.clusters ({settings.clusters}) exceeds the {embeddings.shape[0]} "
                             f"unlabeled images; lower cactus.clusters")
    assignments = []
    for partition in range(settings.partitions):
        generator = torch.Generator().manual_seed(partition_seed(settings.seed, partition))
        scale = (torch.ones(embeddings.shape[1]) if partition == 0
                 else torch.rand(embeddings.shape[1], generator=generator))
        result = kmeans(embeddings * scale, settings.clusters, generator, settings.kmeans_iterations)
        assignments.append(result.assignments)
    return torch.stack(assignments)


def make_partitions(images: Tensor, settings: CactusSettings, use_cache: bool = True) -> Tensor:
    """:func:`cluster_partitions` of :func:`embed` of ``images``, cached on disk under a key of the
    images' bytes and ``settings`` (an interrupted run resumes on the very same pseudo-labels)."""
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(json.dumps({"version": PARTITIONS_FORMAT_VERSION, **asdict(settings)},
                             sort_keys=True).encode())
    path = store_cache_dir() / f"cactus-partitions-{digest.hexdigest()[:24]}.pt"
    if use_cache and path.is_file():
        try:
            return torch.load(path, weights_only=True)["assignments"].long()
        except Exception:  # a damaged cache file: cluster again
            path.unlink(missing_ok=True)
    assignments = cluster_partitions(embed(images, settings), settings)
    if use_cache:
        try:
            atomic_torch_save({"assignments": assignments.to(torch.int32)}, path)
        except OSError:
            pass
    return assignments


@dataclass(frozen=True)
class PseudoEpisodeIndices:
    """Which partition, clusters, turns and image rows make up a batch of pseudo-labelled tasks."""

    partitions: Tensor  # int64 [T]
    class_ids: Tensor  # int64 [T, ways], clusters of the task's partition
    quarter_turns: Tensor  # int64 [T, ways]
    rows: Tensor  # int64 [T, ways, shots + queries], rows of the unlabeled images

    def slice(self, start: int, stop: int) -> PseudoEpisodeIndices:
        return PseudoEpisodeIndices(self.partitions[start:stop], self.class_ids[start:stop],
                                    self.quarter_turns[start:stop], self.rows[start:stop])


class PseudoLabelTasks:
    """N-way K-shot tasks whose classes are the clusters of one of several partitions.

    Args:
        images: ``uint8 [N, (C,) H, W]`` unlabeled images.
        assignments: ``int64 [P, N]`` cluster of each image in each partition.
        ways, shots, queries: the task shape.
        rotations: degrees (multiples of 90) a drawn cluster may be turned by.

    Raises:
        TaskError: when a partition has fewer than ``ways`` clusters of ``shots + queries`` images.
    """

    def __init__(self, images: Tensor, assignments: Tensor, ways: int, shots: int, queries: int,
                 rotations: tuple[int, ...] = (0,)) -> None:
        if assignments.dim() != 2 or assignments.shape[1] != images.shape[0]:
            raise InnerloopError(f"assignments must be [partitions, {images.shape[0]}] (one cluster per "
                                 f"image and partition), got {tuple(assignments.shape)}")
        if any(degrees % 90 for degrees in rotations) or not rotations:
            raise InnerloopError(f"rotations must be a non-empty list of multiples of 90, got {rotations}")
        self.images, self.ways, self.shots, self.queries = images, ways, shots, queries
        self.rotation_turns = torch.tensor([(degrees // 90) % 4 for degrees in rotations])
        per_class = shots + queries
        clusters = int(assignments.max()) + 1
        self.order = torch.argsort(assignments, dim=1, stable=True)  # [P, N] rows by cluster
        self.counts = torch.stack([torch.bincount(a, minlength=clusters) for a in assignments])  # [P, k]
        self.offsets = self.counts.cumsum(1) - self.counts
        self.eligible = self.counts >= per_class  # [P, k]
        usable = self.eligible.sum(1)
        worst = int(usable.argmin())
        if int(usable[worst]) < ways:
            raise TaskError(
                f"partition {worst} has only {int(usable[worst])} clusters with at least shots + queries "
                f"= {per_class} images, and {ways}-way tasks need {ways}: lower cactus.clusters "
                f"(now {clusters}; fewer, larger clusters) or lower train.ways / train.shots + train.queries")
        self._max_count = int(self.counts.max())

    @property
    def num_partitions(self) -> int:
        return int(self.order.shape[0])

    def sample_indices(self, num_tasks: int, generator: torch.Generator) -> PseudoEpisodeIndices:
        """Draw the partitions, clusters, turns and image rows of ``num_tasks`` tasks."""
        partitions = torch.randint(self.num_partitions, (num_tasks,), generator=generator)
        eligible = self.eligible[partitions]  # [T, k]
        keys = torch.rand(eligible.shape, generator=generator, dtype=torch.float64)
        class_ids = keys.masked_fill(~eligible, -1.0).topk(self.ways, dim=1).indices  # [T, ways]
        counts = self.counts[partitions.unsqueeze(1), class_ids]  # [T, ways]
        keys = torch.rand(num_tasks, self.ways, self._max_count, generator=generator, dtype=torch.float64)
        keys = keys.masked_fill(torch.arange(self._max_count) >= counts.unsqueeze(-1), 2.0)
        positions = keys.argsort(dim=-1)[..., :self.shots + self.queries]
        sorted_positions = self.offsets[partitions.unsqueeze(1), class_ids].unsqueeze(-1) + positions
        rows = self.order[partitions.view(-1, 1, 1), sorted_positions]
        turns = self.rotation_turns[torch.randint(self.rotation_turns.numel(), (num_tasks, self.ways),
                                                  generator=generator)]
        return PseudoEpisodeIndices(partitions, class_ids, turns, rows)

    def gather(self, indices: PseudoEpisodeIndices) -> Episodes:
        """Turn indices into float images in ``[0, 1]`` with a channel axis, each class turned."""
        images = self.images[indices.rows]  # [T, ways, per_class, (C,) H, W]
        if images.dim() == 5:
            images = images.unsqueeze(3)
        for turns in (1, 2, 3):
            selected = indices.quarter_turns == turns
            if bool(selected.any()):
                images[selected] = torch.rot90(images[selected], turns, dims=(-2, -1))
        num_tasks = images.shape[0]
        labels = torch.arange(self.ways)
        return Episodes(
            support_x=to_unit_float(images[:, :, :self.shots].flatten(1, 2)),
            support_y=labels.repeat_interleave(self.shots).expand(num_tasks, -1).contiguous(),
            query_x=to_unit_float(images[:, :, self.shots:].flatten(1, 2)),
            query_y=labels.repeat_interleave(self.queries).expand(num_tasks, -1).contiguous(),
            ways=self.ways, shots=self.shots, queries=self.queries, class_ids=indices.class_ids)

    def sample(self, num_tasks: int, generator: torch.Generator) -> Episodes:
        """Draw a meta-batch of ``num_tasks`` pseudo-labelled tasks."""
        return self.gather(self.sample_indices(num_tasks, generator))


def cactus_settings(config: Any) -> CactusSettings:
    """The :class:`CactusSettings` of a run's ``cactus`` section (seeded by ``config.seed``)."""
    section = config.cactus
    return CactusSettings(embedding=section.embedding, embedding_dim=section.embedding_dim,
                          blur_sigma=section.blur_sigma, autoencoder_steps=section.autoencoder_steps,
                          clusters=section.clusters, partitions=section.partitions,
                          kmeans_iterations=section.kmeans_iterations, seed=config.seed)


def cactus_tasks(config: Any, split: ClassSplit, use_cache: bool = True) -> PseudoLabelTasks:
    """The training tasks of ``data.pseudo_labels: cactus``: :class:`PseudoLabelTasks` on the
    unlabeled images of ``split`` (the run's ``data.train_split``), turned by ``data.rotations``."""
    images = unlabeled_images(split)
    assignments = make_partitions(images, cactus_settings(config), use_cache=use_cache)
    train = config.train
    return PseudoLabelTasks(images, assignments, train.ways, train.shots, train.queries,
                            tuple(config.data.rotations))
