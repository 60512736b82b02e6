"""The AutoML benchmark's leave-one-dataset-out counts on a hand-made knowledge table."""

from __future__ import annotations

import sys

import numpy as np

from conftest import REPO
from innerloop.automl import Configuration, MetaKnowledge, evaluations_to_reach, random_search_order

sys.path.insert(0, str(REPO))
from benchmarks.automl_warm_start import leave_one_out  # noqa: E402


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
