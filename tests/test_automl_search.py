"""AutoML search side: nearest-dataset retrieval, the warm-start and global-best orders, random
search without repeats, evaluations-to-reach and regret on hand-made trajectories, seeded
reproducibility, and the knowledge cache."""

from __future__ import annotations

import numpy as np
import pytest

from innerloop.automl import (
    Configuration,
    MetaKnowledge,
    WarmStartSearch,
    best_so_far,
    configuration_pool,
    evaluate_configuration,
    evaluations_to_reach,
    global_best_configurations,
    load_or_build_knowledge,
    meta_features,
    nearest_datasets,
    random_search_order,
    regret_curve,
    search_order,
    synthetic_datasets,
    warm_start_configurations,
)
from innerloop.automl.meta_features import META_FEATURE_PROTOCOL
from innerloop.automl.similarity_search import propose_next, relative_scores, score_similarity, similarity_search


def knowledge_of(meta_features: list[list[float]], scores: list[list[float]]) -> MetaKnowledge:
    """A hand-made MetaKnowledge over ``len(scores[0])`` kNN configurations."""
    pool = tuple(Configuration.of("knn", n_neighbors=k + 1, weights="uniform") for k in range(len(scores[0])))
    names = tuple(f"d{i}" for i in range(len(scores)))
    return MetaKnowledge(names, pool, np.array(meta_features, dtype=float), np.array(scores, dtype=float),
                         feature_names=tuple(f"f{j}" for j in range(len(meta_features[0]))))


def test_nearest_dataset_is_the_constructed_one_in_standardised_distance():
    # feature 0 spans ~100, feature 1 spans 1: raw distance would pick d0 for the target (0, 1)
    # (|1| < |3|), standardised distance picks d1 (3 is small against feature 0's spread, 1 is two stds)
    knowledge = knowledge_of([[0, 0], [3, 1], [100, 0], [100, 1]], [[0.5, 0.5]] * 4)
    nearest, distances = nearest_datasets(np.array([0.0, 1.0]), knowledge, num_neighbours=4)
    assert nearest[0] == 1
    assert nearest == [1, 0, 3, 2]
    assert np.all(np.diff(distances) >= 0)
    scale = np.array([np.std([0, 3, 100, 100]), 0.5])
    assert distances[0] == pytest.approx(3 / scale[0])


def test_nearest_dataset_of_a_copy_of_a_meta_training_dataset_is_that_dataset():
    rows = np.random.default_rng(0).normal(size=(12, 5))
    knowledge = knowledge_of(rows.tolist(), [[0.0, 1.0]] * 12)
    for row in range(12):
        nearest, distances = nearest_datasets(rows[row] + 1e-6, knowledge, num_neighbours=3)
        assert nearest[0] == row and distances[0] < 1e-5


def test_warm_start_evaluates_the_neighbours_best_configurations_first_without_repeats():
    # neighbours of the target (0, 0) by distance: d2, d0, d3, d1; their best configurations 4, 4, 1, 0
    scores = [[0.1, 0.2, 0.3, 0.4, 0.9, 0.5],   # d0: best 4
              [0.9, 0.2, 0.3, 0.4, 0.5, 0.5],   # d1: best 0
              [0.1, 0.2, 0.3, 0.4, 0.9, 0.9],   # d2: best 4 (the first of a tie)
              [0.1, 0.9, 0.3, 0.4, 0.5, 0.5]]   # d3: best 1
    knowledge = knowledge_of([[1.0, 0.0], [4.0, 0.0], [0.5, 0.0], [2.0, 0.0]], scores)
    target = np.array([0.0, 0.0])
    assert warm_start_configurations(target, knowledge, num_neighbours=3) == [4, 1]
    assert warm_start_configurations(target, knowledge, num_neighbours=4) == [4, 1, 0]
    order = WarmStartSearch(knowledge, num_neighbours=4).order(target, seed=7)
    assert order[:3] == [4, 1, 0]
    assert sorted(order) == list(range(6))  # every configuration exactly once


def test_global_best_ranks_configurations_by_mean_score():
    knowledge = knowledge_of([[0.0], [1.0]], [[0.9, 0.5, 0.7, 0.7], [0.1, 0.8, 0.7, 0.8]])
    # means 0.5, 0.65, 0.7, 0.75
    assert global_best_configurations(knowledge, 3) == [3, 2, 1]
    assert global_best_configurations(knowledge, 0) == []


def test_search_order_is_seeded_complete_and_refuses_repeats():
    assert random_search_order(50, seed=3) == random_search_order(50, seed=3)
    assert random_search_order(50, seed=3) != random_search_order(50, seed=4)
    order = search_order([7, 2], 10, seed=0)
    assert order[:2] == [7, 2] and sorted(order) == list(range(10))
    with pytest.raises(ValueError, match="repeat"):
        search_order([3, 3], 10, seed=0)
    with pytest.raises(ValueError, match="outside the pool"):
        search_order([10], 10, seed=0)


def test_evaluations_to_reach_and_regret_on_a_hand_made_trajectory():
    scores = [0.5, 0.7, 0.6, 0.9, 0.95]
    np.testing.assert_allclose(best_so_far(scores), [0.5, 0.7, 0.7, 0.9, 0.95])
    assert evaluations_to_reach(scores, 0.4) == 1
    assert evaluations_to_reach(scores, 0.7) == 2
    assert evaluations_to_reach(scores, 0.65) == 2
    assert evaluations_to_reach(scores, 0.9) == 4
    assert evaluations_to_reach(scores, 0.95) == 5
    assert evaluations_to_reach(scores, 0.96) is None
    assert evaluations_to_reach([2 / 3], 1 - 1 / 3) == 1  # equal up to rounding counts as reached
    np.testing.assert_allclose(regret_curve(scores, 1.0, 7), [0.5, 0.3, 0.3, 0.1, 0.05, 0.05, 0.05])
    np.testing.assert_allclose(regret_curve(scores, 1.0, 2), [0.5, 0.3])


@pytest.fixture(scope="module")
def small_collection():
    """Six small synthetic datasets and a 12-configuration pool (a few seconds to evaluate)."""
    datasets = synthetic_datasets(6, seed=11)
    return datasets, configuration_pool(12, seed=3)


def test_warm_started_search_runs_on_a_new_dataset_and_is_reproducible(small_collection, tmp_path):
    datasets, pool = small_collection
    meta_training, target = datasets[:5], datasets[5]
    knowledge, path, cached = load_or_build_knowledge(meta_training, pool, tmp_path)
    assert not cached and path.is_file()
    again, same_path, cached_again = load_or_build_knowledge(meta_training, pool, tmp_path)
    assert cached_again and same_path == path
    np.testing.assert_array_equal(again.scores, knowledge.scores)
    np.testing.assert_array_equal(again.meta_features, knowledge.meta_features)
    assert again.configurations == knowledge.configurations and again.dataset_names == knowledge.dataset_names
    assert knowledge.scores[2, 5] == evaluate_configuration(pool[5], meta_training[2])

    search = WarmStartSearch(knowledge, num_neighbours=3)
    result = search.run(target, budget=6, seed=1)
    target_features = np.array(list(meta_features(target).values()))
    initial = warm_start_configurations(target_features, knowledge, 3)
    assert list(result.configurations[:len(initial)]) == [pool[i] for i in initial]
    assert len(set(result.configurations)) == 6
    assert result.scores.tolist() == [evaluate_configuration(c, target) for c in result.configurations]
    repeated = search.run(target, budget=6, seed=1)
    assert repeated.configurations == result.configurations
    np.testing.assert_array_equal(repeated.scores, result.scores)
    assert result.best_score == max(result.scores)


def test_leaving_a_dataset_out_removes_its_row(small_collection, tmp_path):
    datasets, pool = small_collection
    knowledge, _, _ = load_or_build_knowledge(datasets[:3], pool, tmp_path)
    rest = knowledge.without(1)
    assert rest.dataset_names == (datasets[0].name, datasets[2].name)
    np.testing.assert_array_equal(rest.scores, knowledge.scores[[0, 2]])
    np.testing.assert_array_equal(rest.meta_features, knowledge.meta_features[[0, 2]])


def test_similarity_search_follows_the_dataset_whose_scores_rank_alike():
    # d0 ranks configurations 0 < 1 < 2 < 3 < 4; d1 the reverse. The target scored 0.2 on
    # configuration 0 and 0.4 on 1 (rising, like d0): correlation +1 with d0, -1 with d1,
    # so the next proposal is d0's best unevaluated configuration, 4.
    scores = [[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2, 0.1]]
    knowledge = knowledge_of([[0.0], [1.0]], scores)
    np.testing.assert_allclose(score_similarity(knowledge, [0, 1], [0.2, 0.4]), [1.0, -1.0])
    np.testing.assert_array_equal(score_similarity(knowledge, [0], [0.2]), [0.0, 0.0])  # undefined: one point
    assert propose_next(knowledge, [0, 1], [0.2, 0.4], num_neighbours=1) == 4
    assert propose_next(knowledge, [0, 1], [0.4, 0.2], num_neighbours=1) == 2  # like d1: its best left is 2
    # one evaluation: no similarity yet, the fallback (meta-feature) neighbour d1 decides
    assert propose_next(knowledge, [3], [0.9], num_neighbours=1, fallback_neighbours=[1]) == 0
    np.testing.assert_allclose(relative_scores(knowledge.scores)[0], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_similarity_search_evaluates_the_initial_list_first_and_never_repeats():
    generator = np.random.default_rng(5)
    knowledge = knowledge_of(generator.normal(size=(6, 2)).tolist(), generator.random((6, 12)).tolist())
    target = generator.random(12)
    calls = []

    def objective(index: int) -> float:
        calls.append(index)
        return float(target[index])

    order, observed = similarity_search(knowledge, [5, 2], objective, budget=12, num_neighbours=2)
    assert order[:2] == [5, 2] and sorted(order) == list(range(12)) and calls == order
    np.testing.assert_array_equal(observed, target[order])
    with pytest.raises(ValueError, match="budget"):
        similarity_search(knowledge, [], objective, budget=13)


def test_leaving_several_datasets_out_removes_their_rows_and_refuses_to_remove_all():
    knowledge = knowledge_of([[0.0], [1.0], [2.0], [3.0]], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    rest = knowledge.without([0, 2])
    assert rest.dataset_names == ("d1", "d3")
    np.testing.assert_array_equal(rest.scores, knowledge.scores[[1, 3]])
    np.testing.assert_array_equal(rest.meta_features, knowledge.meta_features[[1, 3]])
    with pytest.raises(ValueError, match="leaves no dataset"):
        knowledge.without([0, 1, 2, 3])


def test_a_cache_from_another_meta_feature_protocol_keeps_its_scores_and_gets_new_meta_features(
        small_collection, tmp_path):
    datasets, pool = small_collection
    knowledge, path, _ = load_or_build_knowledge(datasets[:2], pool, tmp_path)
    assert knowledge.meta_feature_protocol == META_FEATURE_PROTOCOL
    # a file from an older protocol: stale meta-features, marked scores (to see they are kept, not rebuilt)
    marked_scores = np.full_like(knowledge.scores, 0.5)
    MetaKnowledge(knowledge.dataset_names, pool, np.zeros_like(knowledge.meta_features), marked_scores,
                  knowledge.feature_names, "landmarkers on the validation split").save(path)
    reread, same_path, cached = load_or_build_knowledge(datasets[:2], pool, tmp_path)
    assert cached and same_path == path
    np.testing.assert_array_equal(reread.scores, marked_scores)
    np.testing.assert_array_equal(reread.meta_features, knowledge.meta_features)
    assert MetaKnowledge.load(path).meta_feature_protocol == META_FEATURE_PROTOCOL  # rewritten
