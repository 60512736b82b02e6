"""CACTUs' pseudo-labelled tasks: valid episodes, differing partitions, no label read."""

from __future__ import annotations

import pytest
import torch

from innerloop.config import config_from_dict
from innerloop.data.store import ClassSplit, TensorStore
from innerloop.errors import ConfigError, TaskError
from innerloop.unsupervised.cactus import (CactusSettings, PseudoLabelTasks, cactus_tasks,
                                           cluster_partitions)
from innerloop.unsupervised.clustering_quality import adjusted_rand_index
from innerloop.unsupervised.embeddings import pca_embedding, unlabeled_images

SIDE = 8


def row_coded_images(count: int) -> torch.Tensor:
    """``uint8 [count, 8, 8]``: pixels (0, 0) and (0, 1) spell the row number (high, low byte);
    pixel (7, 7) is a mark that moves when the image is turned."""
    images = torch.zeros(count, SIDE, SIDE, dtype=torch.uint8)
    rows = torch.arange(count)
    images[:, 0, 0] = (rows // 256).to(torch.uint8)
    images[:, 0, 1] = (rows % 256).to(torch.uint8)
    images[:, SIDE - 1, SIDE - 1] = 255
    return images


def decode_rows(images: torch.Tensor) -> torch.Tensor:
    """The row numbers written by :func:`row_coded_images` (images unturned, in [0, 1])."""
    pixels = (images[..., 0, 0, :2] * 255).round().long()
    return pixels[..., 0] * 256 + pixels[..., 1]


def random_assignments(partitions: int, count: int, clusters: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(clusters, (partitions, count), generator=generator)


def test_pseudo_label_tasks_are_valid_episodes() -> None:
    count, ways, shots, queries = 600, 5, 2, 3
    assignments = random_assignments(3, count, 12)
    assignments[1, :40] = 11  # partition 1: cluster 11 grows; some cluster may fall below 5 images
    assignments[1, 40:44] = 10
    assignments[1, 44:][assignments[1, 44:] == 10] = 0  # cluster 10 keeps only 4 images: never drawn
    tasks = PseudoLabelTasks(row_coded_images(count), assignments, ways, shots, queries)
    plan = tasks.sample_indices(64, torch.Generator().manual_seed(0))
    episodes = tasks.gather(plan)
    assert episodes.support_x.shape == (64, ways * shots, 1, SIDE, SIDE)
    assert episodes.query_x.shape == (64, ways * queries, 1, SIDE, SIDE)
    assert episodes.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert episodes.query_y[0].tolist() == [k for k in range(ways) for _ in range(queries)]
    support_rows = decode_rows(episodes.support_x).view(64, ways, shots)
    query_rows = decode_rows(episodes.query_x).view(64, ways, queries)
    assert torch.equal(torch.cat([support_rows, query_rows], dim=2), plan.rows)
    assert len(set(plan.partitions.tolist())) == 3
    for task in range(64):
        partition = int(plan.partitions[task])
        clusters = plan.class_ids[task]
        assert len(set(clusters.tolist())) == ways  # N distinct clusters
        task_rows = plan.rows[task]
        assert task_rows.unique().numel() == ways * (shots + queries)  # support and query disjoint
        # every image of pseudo-class k is in cluster class_ids[k] of the task's partition
        assert torch.equal(assignments[partition][task_rows], clusters.unsqueeze(1).expand_as(task_rows))
        if partition == 1:
            assert 10 not in clusters.tolist()
    again = tasks.sample_indices(64, torch.Generator().manual_seed(0))
    assert torch.equal(again.rows, plan.rows) and torch.equal(again.partitions, plan.partitions)


def test_each_pseudo_class_is_turned_as_one() -> None:
    images = row_coded_images(200)
    tasks = PseudoLabelTasks(images, random_assignments(2, 200, 6), 4, 1, 2, rotations=(0, 90, 180, 270))
    plan = tasks.sample_indices(40, torch.Generator().manual_seed(1))
    episodes = tasks.gather(plan)
    drawn = torch.cat([episodes.support_x.view(40, 4, 1, SIDE, SIDE),
                       episodes.query_x.view(40, 4, 2, SIDE, SIDE)], dim=2)  # [T, ways, 3, H, W]
    for task in range(40):
        for label in range(4):
            turns = int(plan.quarter_turns[task, label])
            for image, row in zip(drawn[task, label], plan.rows[task, label]):
                unturned = torch.rot90(image, -turns, dims=(0, 1))  # the same turn for every image
                assert torch.equal(unturned, images[row].float() / 255)
    assert set(plan.quarter_turns.flatten().tolist()) == {0, 1, 2, 3}


def test_partitions_are_seeded_and_differ() -> None:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(400, 6, generator=generator)
    settings = CactusSettings(clusters=10, partitions=3, seed=0)
    assignments = cluster_partitions(embeddings, settings)
    assert assignments.shape == (3, 400)
    assert torch.equal(assignments, cluster_partitions(embeddings, settings))
    for first in range(3):
        for second in range(first + 1, 3):
            assert adjusted_rand_index(assignments[first], assignments[second]) < 0.9
    other_seed = cluster_partitions(embeddings, CactusSettings(clusters=10, partitions=1, seed=1))
    assert not torch.equal(other_seed[0], assignments[0])


def test_too_few_large_clusters_is_an_error_that_says_what_to_change() -> None:
    assignments = torch.arange(40).remainder(20).unsqueeze(0)  # 20 clusters of 2 images
    with pytest.raises(TaskError, match=r"lower cactus\.clusters .* or lower train\.ways / train\.shots \+ train\.queries"):
        PseudoLabelTasks(row_coded_images(40), assignments, ways=5, shots=1, queries=2)
    PseudoLabelTasks(row_coded_images(40), assignments, ways=5, shots=1, queries=1)  # 2 images suffice


def test_fewer_clusters_than_ways_is_refused_by_the_config() -> None:
    values = {"data": {"pseudo_labels": "cactus"}, "cactus": {"clusters": 4},
              "train": {"ways": 5, "shots": 1, "queries": 1}}
    with pytest.raises(ConfigError, match=r"cactus\.clusters \(4\) < train\.ways \(5\).*raise cactus\.clusters"):
        config_from_dict(values)
    with pytest.raises(ConfigError, match="cactus.embedding: 'acai' is not one of pca, random-conv4, autoencoder"):
        config_from_dict({"data": {"pseudo_labels": "cactus"}, "cactus": {"embedding": "acai"}})
    with pytest.raises(ConfigError, match="data.pseudo_labels: 'kmeans' is not one of cactus"):
        config_from_dict({"data": {"pseudo_labels": "kmeans"}})


def poisoned_store(store: TensorStore, seed: int = 0) -> TensorStore:
    """The same images in the same rows, cut into random classes (every label wrong)."""
    total = store.images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    cuts = torch.randperm(total - 1, generator=generator)[:total // 7].add(1).sort().values
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([total])])
    counts = bounds[1:] - bounds[:-1]
    return TensorStore(images=store.images, class_offsets=bounds[:-1], class_counts=counts,
                       class_names=tuple(f"wrong{c}" for c in range(counts.numel())),
                       class_groups=tuple("wrong" for _ in range(counts.numel())))


def test_pseudo_labels_do_not_depend_on_the_class_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    classes, per_class = 30, 10
    centres = torch.randint(0, 256, (classes, 12, 12), generator=generator)
    noise = torch.randint(-20, 21, (classes, per_class, 12, 12), generator=generator)
    images = (centres.unsqueeze(1) + noise).clamp(0, 255).to(torch.uint8).flatten(0, 1)
    counts = torch.full((classes,), per_class)
    store = TensorStore(images, torch.arange(classes) * per_class, counts,
                        tuple(f"c{c}" for c in range(classes)), tuple("g" for _ in range(classes)))
    poisoned = poisoned_store(store)
    config = config_from_dict({"data": {"pseudo_labels": "cactus"},
                               "cactus": {"clusters": 25, "partitions": 2, "embedding_dim": 8},
                               "train": {"ways": 5, "shots": 1, "queries": 2}})
    real_split = ClassSplit.with_rotations(store, "train", torch.arange(classes))
    poisoned_split = ClassSplit.with_rotations(poisoned, "train", torch.arange(poisoned.num_classes))
    assert torch.equal(unlabeled_images(real_split), unlabeled_images(poisoned_split))
    real_tasks = cactus_tasks(config, real_split, use_cache=False)
    poisoned_tasks = cactus_tasks(config, poisoned_split, use_cache=False)
    first = real_tasks.sample(8, torch.Generator().manual_seed(5))
    second = poisoned_tasks.sample(8, torch.Generator().manual_seed(5))
    assert torch.equal(first.support_x, second.support_x) and torch.equal(first.query_x, second.query_x)
    # the clusters find the hand-made classes (well separated): pseudo-labels are informative
    reference = torch.arange(classes).repeat_interleave(per_class)
    features = pca_embedding(images, dim=8, blur_sigma=0.0)
    partition = cluster_partitions(features, CactusSettings(clusters=classes, partitions=1))[0]
    assert adjusted_rand_index(reference, partition) > 0.9


def test_unlabeled_images_are_the_rows_of_the_split_classes_only() -> None:
    images = row_coded_images(60)
    store = TensorStore(images, torch.tensor([0, 20, 40]), torch.tensor([20, 20, 20]),
                        ("a", "b", "c"), ("g", "g", "g"))
    split = ClassSplit.with_rotations(store, "train", torch.tensor([2, 0]), (0, 90))
    pool = unlabeled_images(split).long()
    assert (pool[:, 0, 0] * 256 + pool[:, 0, 1]).tolist() == list(range(20)) + list(range(40, 60))


def test_the_clustering_report_scores_against_each_images_own_class() -> None:
    from innerloop.unsupervised.report_clustering import true_characters

    images = torch.zeros(60, SIDE, SIDE, dtype=torch.uint8)
    images[:, 0, 0] = torch.arange(3).repeat_interleave(20).to(torch.uint8)  # the class, in pixel (0, 0)
    store = TensorStore(images, torch.tensor([0, 20, 40]), torch.tensor([20, 20, 20]),
                        ("a", "b", "c"), ("g", "g", "g"))
    split = ClassSplit.with_rotations(store, "train", torch.tensor([2, 0]), (0, 90))
    assert torch.equal(true_characters(split), unlabeled_images(split)[:, 0, 0].long())
    assert true_characters(split).tolist() == [0] * 20 + [2] * 20


def test_the_embedding_baseline_is_exact_on_noiseless_classes() -> None:
    from innerloop.unsupervised.report_clustering import embedding_baseline

    generator = torch.Generator().manual_seed(0)
    patterns = torch.randint(0, 2, (12, SIDE, SIDE), generator=generator).to(torch.uint8) * 255
    store = TensorStore(patterns.repeat_interleave(20, dim=0), torch.arange(12) * 20,
                        torch.full((12,), 20), tuple(f"c{c}" for c in range(12)), tuple("g" for _ in range(12)))
    split = ClassSplit.with_rotations(store, "test", torch.arange(12))
    accuracy, _ = embedding_baseline(split, split, CactusSettings(embedding_dim=10, blur_sigma=0.0),
                                     episodes=20, ways=5, shots=1, queries=3)
    assert accuracy == 1.0
    # two classes that share one pattern cannot be told apart: about half their queries are wrong
    store_twins = TensorStore(torch.cat([patterns[:1].repeat(40, 1, 1)]), torch.tensor([0, 20]),
                              torch.tensor([20, 20]), ("a", "b"), ("g", "g"))
    twins = ClassSplit.with_rotations(store_twins, "test", torch.arange(2))
    accuracy, _ = embedding_baseline(split, twins, CactusSettings(embedding_dim=10, blur_sigma=0.0),
                                     episodes=20, ways=2, shots=1, queries=3)
    assert accuracy == 0.5  # every query ties and argmin picks label 0: right for one class only
