"""The AutoML benchmark's leave-one-dataset-out and leave-family-out counts on a hand-made knowledge table."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import REPO
from innerloop.automl import (
    Configuration,
    MetaKnowledge,
    TabularDataset,
    evaluations_to_reach,
    random_search_order,
    synthetic_datasets,
)

sys.path.insert(0, str(REPO))
from benchmarks.automl_warm_start import (  # noqa: E402
    family_rows,
    generator_family,
    leave_one_out,
    same_family_share,
)


def test_leave_one_out_counts_evaluations_per_method():
    # d0 and d1 are neighbours in meta-feature space and share their best configuration (1);
    # d2 is far away and prefers configuration 0, which is also the best on average over d1 and d2.
    scores = np.array([[0.5, 0.9, 0.6, 0.7], [0.5, 0.95, 0.6, 0.7], [0.9, 0.1, 0.2, 0.3]])
    pool = tuple(Configuration.of("logistic", log10_C=float(c)) for c in range(4))
    knowledge = MetaKnowledge(("d0", "d1", "d2"), pool, np.array([[0.0], [0.1], [5.0]]), scores, ("f0",))
    methods = {"random": ("random", 1), "warm_start": ("warm_start", 1), "global_best": ("global_best", 1)}
    results = leave_one_out(knowledge, methods, range(4), tolerances=[0.0], curve_length=4)
    # on d0, the warm start's first configuration is d1's best, configuration 1: d0's best, reached at once
    np.testing.assert_array_equal(results["warm_start"]["evaluations"][0, 0], [1, 1, 1, 1])
    np.testing.assert_allclose(results["warm_start"]["regret"][0, 0], [0.0] * 4)
    # global best over d1 and d2: means (0.7, 0.525, 0.4, 0.5) -> configuration 0 first, 0.4 below d0's best
    assert np.all(results["global_best"]["evaluations"][0, 0] >= 2)
    np.testing.assert_allclose(results["global_best"]["regret"][0, :, 0], 0.4)
    for seed in range(4):  # random search: the seeded permutation, counted directly
        order = random_search_order(4, seed)
        for target in range(3):
            expected = evaluations_to_reach(scores[target, order], scores[target].max())
            assert results["random"]["evaluations"][0, target, seed] == expected


def test_leave_family_out_removes_the_targets_siblings_from_its_meta_training_datasets():
    # d0 and d1 are siblings (family "a") with the same best configuration 1; d2 (family "b") prefers 0.
    # Leave-one-dataset-out, d0's nearest dataset is d1 and the warm start finds d0's best at once;
    # leave-family-out removes d1, so the only neighbour is d2 and the first evaluation is configuration 0.
    scores = np.array([[0.5, 0.9, 0.6, 0.7], [0.5, 0.95, 0.6, 0.7], [0.9, 0.1, 0.2, 0.3]])
    pool = tuple(Configuration.of("logistic", log10_C=float(c)) for c in range(4))
    knowledge = MetaKnowledge(("d0", "d1", "d2"), pool, np.array([[0.0], [0.1], [5.0]]), scores, ("f0",))
    left_out = family_rows(["a", "a", "b"])
    assert left_out == [[0, 1], [0, 1], [2]]
    methods = {"warm_start": ("warm_start", 1)}
    one_out = leave_one_out(knowledge, methods, range(2), tolerances=[0.0], curve_length=4)
    family_out = leave_one_out(knowledge, methods, range(2), tolerances=[0.0], curve_length=4, left_out=left_out)
    np.testing.assert_array_equal(one_out["warm_start"]["evaluations"][0, 0], [1, 1])
    np.testing.assert_allclose(family_out["warm_start"]["regret"][0, :, 0], 0.4)  # configuration 0 on d0: 0.5
    assert np.all(family_out["warm_start"]["evaluations"][0, 0] >= 2)
    # d2 is a family of its own: the same meta-training datasets, so the same counts both ways
    np.testing.assert_array_equal(family_out["warm_start"]["evaluations"][0, 2],
                                  one_out["warm_start"]["evaluations"][0, 2])
    assert same_family_share(knowledge, ["a", "a", "b"], 1) == pytest.approx(2 / 3)  # d0 -> d1, d1 -> d0, d2 -> d1
    assert same_family_share(knowledge, ["a", "a", "b"], 1, left_out) == 0.0


def test_generator_family_of_synthetic_and_bundled_datasets():
    made = synthetic_datasets(3, seed=0)
    assert [generator_family(d) for d in made] == ["make_classification", "make_classification", "make_moons"]
    bundled = TabularDataset("iris", np.eye(2), np.array([0, 1]), np.eye(2), np.array([0, 1]), 2, 0,
                             {"loader": "sklearn.datasets.load_iris"})
    assert generator_family(bundled) == "iris"
