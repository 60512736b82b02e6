from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from innerloop.data.store import ClassSplit
from innerloop.errors import TaskError
from innerloop.tasks import EpisodeSampler, FixedEpisodes
from tests.conftest import make_coded_store


def decode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class and example number written into pixels (0, 0) and (0, 1) by make_coded_store."""
    raw = torch.round(images * 255).to(torch.int64)
    return raw[..., 0, 0, 0], raw[..., 0, 0, 1]


def test_tasks_have_distinct_classes_and_disjoint_support_and_query(coded_split):
    sampler = EpisodeSampler(coded_split, ways=5, shots=2, queries=3)
    episodes = sampler.sample(64, torch.Generator().manual_seed(1))
    assert episodes.support_x.shape == (64, 10, 1, 4, 4)
    assert episodes.query_x.shape == (64, 15, 1, 4, 4)
    for task in range(64):
        assert len(set(episodes.class_ids[task].tolist())) == 5
        support_class, support_example = decode(episodes.support_x[task])
        query_class, query_example = decode(episodes.query_x[task])
        support_pairs = set(zip(support_class.tolist(), support_example.tolist()))
        query_pairs = set(zip(query_class.tolist(), query_example.tolist()))
        assert len(support_pairs) == 10 and len(query_pairs) == 15
        assert support_pairs.isdisjoint(query_pairs)


def test_labels_are_remapped_to_the_chosen_classes(coded_split):
    sampler = EpisodeSampler(coded_split, ways=4, shots=3, queries=2)
    episodes = sampler.sample(16, torch.Generator().manual_seed(2))
    assert episodes.support_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert episodes.query_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    support_class, _ = decode(episodes.support_x)
    query_class, _ = decode(episodes.query_x)
    expected_support = torch.gather(episodes.class_ids, 1, episodes.support_y)
    expected_query = torch.gather(episodes.class_ids, 1, episodes.query_y)
    assert torch.equal(support_class, expected_support)
    assert torch.equal(query_class, expected_query)


def test_same_seed_same_episodes_and_different_seed_different_episodes(coded_split):
    sampler = EpisodeSampler(coded_split, ways=5, shots=1, queries=5)
    first = sampler.sample(8, torch.Generator().manual_seed(7))
    again = sampler.sample(8, torch.Generator().manual_seed(7))
    other = sampler.sample(8, torch.Generator().manual_seed(8))
    assert torch.equal(first.support_x, again.support_x)
    assert torch.equal(first.query_x, again.query_x)
    assert not torch.equal(first.class_ids, other.class_ids)


PINNED_CLASS_IDS = [[48, 0, 3, 35, 49], [13, 3, 42, 17, 41]]


def test_known_seed_gives_known_classes(coded_split):
    # Pins the sampling stream: the same seed must give these episodes on every machine.
    sampler = EpisodeSampler(coded_split, ways=5, shots=1, queries=1)
    episodes = sampler.sample(2, torch.Generator().manual_seed(0))
    assert episodes.class_ids.tolist() == PINNED_CLASS_IDS


def chi_square(counts: torch.Tensor) -> float:
    expected = counts.double().mean()
    return float(((counts.double() - expected) ** 2 / expected).sum())


def test_classes_and_examples_are_covered_uniformly(coded_split):
    sampler = EpisodeSampler(coded_split, ways=5, shots=1, queries=1)
    indices = sampler.sample_indices(4000, torch.Generator().manual_seed(3))
    class_counts = torch.bincount(indices.class_ids.flatten(), minlength=50)
    # 49 degrees of freedom: P(chi2 > 85.4) = 0.001 under uniform sampling.
    assert chi_square(class_counts) < 85.4, class_counts
    example_counts = torch.bincount(indices.rows.flatten(), minlength=50 * 20)
    # 999 degrees of freedom: P(chi2 > 1143) = 0.001.
    assert chi_square(example_counts) < 1143


def test_classes_of_different_sizes_never_index_past_their_examples():
    store = make_coded_store([3, 20, 4, 7, 5, 9])
    split = ClassSplit.with_rotations(store, "ragged", torch.arange(6))
    sampler = EpisodeSampler(split, ways=3, shots=1, queries=2)
    episodes = sampler.sample(500, torch.Generator().manual_seed(4))
    classes, examples = decode(torch.cat([episodes.support_x, episodes.query_x], dim=1))
    assert bool((examples < store.class_counts[classes]).all())
    assert examples.max().item() > 3  # the large classes do use their later examples


def test_rotated_classes_are_rotated_copies_of_their_base_class():
    store = make_coded_store([20] * 10)
    split = ClassSplit.with_rotations(store, "rotated", torch.arange(10), (0, 90, 180, 270))
    assert split.num_classes == 40
    sampler = EpisodeSampler(split, ways=10, shots=1, queries=0)
    episodes = sampler.sample(20, torch.Generator().manual_seed(5))
    for task in range(20):
        for label in range(10):
            split_class = int(episodes.class_ids[task, label])
            turns = int(split.quarter_turns[split_class])
            image = episodes.support_x[task, label, 0]
            upright = torch.rot90(image, k=-turns, dims=(-2, -1))
            assert round(float(upright[0, 0]) * 255) == int(split.base_classes[split_class])
            assert round(float(upright[-1, -1]) * 255) == 200


def test_impossible_requests_name_the_numbers(coded_split):
    with pytest.raises(TaskError, match=r"51-way episodes need 51 classes but split 'coded' has 50"):
        EpisodeSampler(coded_split, ways=51, shots=1, queries=1)
    with pytest.raises(TaskError, match=r"5 \+ 16 = 21 examples per class.*only 20"):
        EpisodeSampler(coded_split, ways=5, shots=5, queries=16)
    with pytest.raises(TaskError, match="ways and shots must be >= 1"):
        EpisodeSampler(coded_split, ways=5, shots=0, queries=1)


def test_fixed_episodes_do_not_depend_on_batch_size(coded_split):
    sampler = EpisodeSampler(coded_split, ways=5, shots=1, queries=3)
    fixed = FixedEpisodes(sampler, num_episodes=23, seed=11)
    in_fives = torch.cat([b.query_x for b in fixed.batches(5)])
    all_at_once = torch.cat([b.query_x for b in fixed.batches(100)])
    assert in_fives.shape[0] == 23
    assert torch.equal(in_fives, all_at_once)
    assert torch.equal(FixedEpisodes(sampler, 23, seed=11).indices.rows, fixed.indices.rows)


def test_episodes_index_and_slice_by_task(coded_split):
    episodes = EpisodeSampler(coded_split, ways=3, shots=2, queries=1).sample(4, torch.Generator().manual_seed(9))
    one = episodes[2]
    assert one.support_x.shape == (6, 1, 4, 4) and one.query_y.tolist() == [0, 1, 2]
    assert torch.equal(one.class_ids, episodes.class_ids[2])
    part = episodes.slice(1, 3)
    assert len(part) == 2 and torch.equal(part.query_x, episodes.query_x[1:3])
    assert (part.ways, part.shots, part.queries) == (3, 2, 1)


def test_non_square_images_turn_by_180_degrees_and_refuse_90():
    square = make_coded_store([20] * 6, side=6)
    store = replace(square, images=square.images[:, 1:5, :].contiguous())  # 4x6 images
    store.images[:, -1, -1] = 200
    with pytest.raises(TaskError, match="non-square 4x6 images by 90 degrees"):
        EpisodeSampler(ClassSplit.with_rotations(store, "wide", torch.arange(6), (0, 90)), 2, 1, 1)
    split = ClassSplit.with_rotations(store, "wide", torch.arange(6), (0, 180))
    episodes = EpisodeSampler(split, ways=12, shots=1, queries=0).sample(3, torch.Generator().manual_seed(0))
    assert episodes.support_x.shape == (3, 12, 1, 4, 6)
    for task in range(3):
        for label in range(12):
            turns = int(split.quarter_turns[episodes.class_ids[task, label]])
            upright = torch.rot90(episodes.support_x[task, label, 0], k=-turns, dims=(-2, -1))
            assert round(float(upright[-1, -1]) * 255) == 200
    assert {int(split.quarter_turns[c]) for c in episodes.class_ids.flatten()} == {0, 2}
