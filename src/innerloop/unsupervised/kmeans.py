"""Seeded k-means in torch (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007).

:func:`kmeans_plus_plus` picks the first centre uniformly among ``points``, then each further
centre with probability proportional to ``nearest_squared_distance``, the squared distance of a
point to the closest centre chosen so far. :func:`kmeans` then alternates

* assignment: ``assignments = argmin_c ||points - centroids[c]||^2``, for all points at once from
  ``||x||^2 - 2 x . c + ||c||^2`` (one matrix product per chunk of rows);
* update: ``centroids[c] = mean of points[assignments == c]`` (one ``index_add_``);

until no assignment changes or ``max_iterations`` updates were made. A cluster that loses all its
points is re-seeded with the point farthest from its centroid (distinct points for several empty
clusters), so every returned cluster has at least one member. All randomness comes from the
``torch.Generator`` passed in: the same seed gives the same clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.errors import InnerloopError

ASSIGNMENT_CHUNK_ROWS = 8192  # rows of the [rows, clusters] distance matrix computed at once


@dataclass(frozen=True)
class KMeansResult:
    """The clustering of ``N`` points into ``k`` clusters.

    Attributes:
        assignments: ``int64 [N]`` cluster of each point, in ``0..k-1``.
        centroids: ``[k, D]`` mean of each cluster's points.
        inertia: sum of squared distances of the points to their centroids.
        iterations: assignment/update rounds run.
        converged: whether the last round changed no assignment.
    """

    assignments: Tensor
    centroids: Tensor
    inertia: float
    iterations: int
    converged: bool

    @property
    def cluster_sizes(self) -> Tensor:
        return torch.bincount(self.assignments, minlength=self.centroids.shape[0])


def squared_distances(points: Tensor, centroids: Tensor) -> Tensor:
    """``[N, k]`` squared Euclidean distances, clamped at 0 against rounding."""
    distances = (points.pow(2).sum(1, keepdim=True) - 2.0 * points @ centroids.T
                 + centroids.pow(2).sum(1).unsqueeze(0))
    return distances.clamp_(min=0.0)


def nearest_centroids(points: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """``(assignments int64 [N], squared distance to the assigned centroid [N])``."""
    assignments, distances = [], []
    for start in range(0, points.shape[0], ASSIGNMENT_CHUNK_ROWS):
        nearest = squared_distances(points[start:start + ASSIGNMENT_CHUNK_ROWS], centroids).min(dim=1)
        assignments.append(nearest.indices)
        distances.append(nearest.values)
    return torch.cat(assignments), torch.cat(distances)


def kmeans_plus_plus(points: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """Indices (``int64 [clusters]``, distinct) of the k-means++ initial centres among ``points``."""
    count = points.shape[0]
    chosen = torch.empty(clusters, dtype=torch.int64)
    chosen[0] = torch.randint(count, (1,), generator=generator)
    nearest_squared_distance = squared_distances(points, points[chosen[:1]]).squeeze(1)
    for index in range(1, clusters):
        total = float(nearest_squared_distance.sum())
        if total > 0:
            weights = nearest_squared_distance.double()
        else:  # every point coincides with a centre: any point not chosen yet
            weights = torch.ones(count, dtype=torch.float64)
            weights[chosen[:index]] = 0.0
        chosen[index] = torch.multinomial(weights, 1, generator=generator)
        new_distance = squared_distances(points, points[chosen[index:index + 1]]).squeeze(1)
        nearest_squared_distance = torch.minimum(nearest_squared_distance, new_distance)
    return chosen


def kmeans(points: Tensor, clusters: int, generator: torch.Generator, max_iterations: int = 100) -> KMeansResult:
    """Cluster ``points [N, D]`` into ``clusters`` groups (see the module docstring).

    Raises:
        InnerloopError: when there are fewer points than clusters, or ``clusters`` < 1.
    """
    if points.dim() != 2:
        raise InnerloopError(f"kmeans takes points of shape [N, D], got {tuple(points.shape)}")
    count = points.shape[0]
    if not 1 <= clusters <= count:
        raise InnerloopError(f"kmeans: {clusters} clusters need between 1 and {count} points "
                             f"(the number of points); lower the number of clusters")
    if max_iterations < 1:
        raise InnerloopError(f"kmeans: max_iterations must be >= 1, got {max_iterations}")
    points = points.float()
    centroids = points[kmeans_plus_plus(points, clusters, generator)].clone()
    assignments, distances = nearest_centroids(points, centroids)
    converged = False
    iterations = 0
    while iterations < max_iterations and not converged:
        iterations += 1
        centroids = _cluster_means(points, assignments, distances, centroids)
        new_assignments, distances = nearest_centroids(points, centroids)
        converged = bool(torch.equal(new_assignments, assignments))
        assignments = new_assignments
    # the centroids of the final assignments (one more update would move none of them when converged)
    centroids = _cluster_means(points, assignments, distances, centroids)
    assignments, distances = nearest_centroids(points, centroids)
    return KMeansResult(assignments=assignments, centroids=centroids, inertia=float(distances.sum()),
                        iterations=iterations, converged=converged)


def _cluster_means(points: Tensor, assignments: Tensor, distances: Tensor, centroids: Tensor) -> Tensor:
    """Mean of each cluster's points; an empty cluster takes the point farthest from its centroid
    (and that point leaves its old cluster's mean), distinct points for distinct empty clusters."""
    clusters = centroids.shape[0]
    sizes = torch.bincount(assignments, minlength=clusters)
    empty = (sizes == 0).nonzero().squeeze(1)
    if empty.numel() > 0:
        assignments = assignments.clone()
        farthest = distances.topk(empty.numel()).indices
        assignments[farthest] = empty
        sizes = torch.bincount(assignments, minlength=clusters)
    sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
    means = sums / sizes.clamp(min=1).unsqueeze(1).to(points.dtype)
    return torch.where((sizes > 0).unsqueeze(1), means, centroids)  # all points equal: keep it
