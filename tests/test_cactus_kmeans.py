"""k-means in torch (seeded k-means++, empty clusters) and the clustering-quality scores."""

from __future__ import annotations

import pytest
import torch

from innerloop.errors import InnerloopError
from innerloop.unsupervised.clustering_quality import adjusted_rand_index, contingency_table, purity
from innerloop.unsupervised.kmeans import _cluster_means, kmeans, kmeans_plus_plus

BLOB_CENTRES = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])


def blobs(points_per_blob: int = 50, spread: float = 0.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four tight hand-placed Gaussian blobs and the blob of each point."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(points_per_blob)
    points = BLOB_CENTRES[labels] + spread * torch.randn(labels.numel(), 2, generator=generator)
    return points, labels


def test_kmeans_recovers_hand_made_blobs() -> None:
    points, labels = blobs()
    result = kmeans(points, 4, torch.Generator().manual_seed(0))
    assert result.converged
    assert adjusted_rand_index(labels, result.assignments) == pytest.approx(1.0)
    assert purity(labels, result.assignments) == 1.0
    # each centroid is its blob's mean, within a few spreads / sqrt(50) of the true centre
    for blob in range(4):
        cluster = int(result.assignments[labels == blob][0])
        assert torch.allclose(result.centroids[cluster], points[labels == blob].mean(0), atol=1e-5)
        assert torch.dist(result.centroids[cluster], BLOB_CENTRES[blob]) < 0.3
    assert result.cluster_sizes.tolist() == [50, 50, 50, 50]


def test_kmeans_is_seeded() -> None:
    points, _ = blobs(spread=3.0)  # overlapping blobs: the result depends on the initial centres
    first = kmeans(points, 7, torch.Generator().manual_seed(3))
    again = kmeans(points, 7, torch.Generator().manual_seed(3))
    assert torch.equal(first.assignments, again.assignments)
    assert torch.equal(first.centroids, again.centroids)
    starts = {tuple(kmeans_plus_plus(points, 7, torch.Generator().manual_seed(seed)).tolist())
              for seed in range(5)}
    assert len(starts) == 5


def test_kmeans_plus_plus_spreads_its_centres_over_the_blobs() -> None:
    points, labels = blobs()
    chosen = kmeans_plus_plus(points, 4, torch.Generator().manual_seed(0))
    assert len(set(chosen.tolist())) == 4
    assert sorted(labels[chosen].tolist()) == [0, 1, 2, 3]


def test_kmeans_inertia_on_a_hand_computed_case() -> None:
    points = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    result = kmeans(points, 2, torch.Generator().manual_seed(0))
    assert sorted(result.centroids.squeeze(1).tolist()) == [1.0, 11.0]
    assert result.inertia == pytest.approx(4.0)  # four points, each 1 from its centroid


def test_an_empty_cluster_takes_the_farthest_point() -> None:
    points = torch.tensor([[0.0], [1.0], [10.0]])
    assignments = torch.tensor([0, 0, 0])  # cluster 1 lost all its points
    centroids = torch.tensor([[3.0], [100.0]])
    distances = (points - centroids[0]).pow(2).squeeze(1)  # 9, 4, 49: point 2 is the farthest
    means = _cluster_means(points, assignments, distances, centroids)
    assert means.squeeze(1).tolist() == [0.5, 10.0]


def test_kmeans_with_more_clusters_than_distinct_points_keeps_every_cluster() -> None:
    points = torch.tensor([[0.0], [0.0], [0.0], [5.0], [5.0], [9.0]])
    result = kmeans(points, 3, torch.Generator().manual_seed(1))
    assert result.cluster_sizes.sort().values.tolist() == [1, 2, 3]
    assert result.inertia == 0.0


def test_kmeans_rejects_more_clusters_than_points() -> None:
    with pytest.raises(InnerloopError, match="lower the number of clusters"):
        kmeans(torch.zeros(3, 2), 4, torch.Generator().manual_seed(0))


def test_adjusted_rand_index_and_purity_by_hand() -> None:
    reference = torch.tensor([0, 0, 1, 1])
    assert adjusted_rand_index(reference, torch.tensor([5, 5, 7, 7])) == pytest.approx(1.0)
    # pairs: index 0, rows 2, columns 2, expected 2 * 2 / 6, maximum 2 -> (0 - 2/3) / (2 - 2/3)
    assert adjusted_rand_index(reference, torch.tensor([0, 1, 0, 1])) == pytest.approx(-0.5)
    assert purity(reference, torch.tensor([0, 1, 0, 1])) == 0.5
    assert purity(torch.tensor([0, 0, 0, 1, 2]), torch.tensor([0, 0, 1, 1, 1])) == pytest.approx(3 / 5)
    assert contingency_table(reference, torch.tensor([0, 1, 0, 1])).tolist() == [[1, 1], [1, 1]]
