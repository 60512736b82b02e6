"""Warm-starting a hyperparameter search from the best configurations of the most similar datasets.

The rule (Feurer, Springenberg & Hutter 2015, "Initializing Bayesian Hyperparameter Optimization
via Meta-Learning"; the meta-learning step of Auto-sklearn): standardise the meta-features over
the meta-training datasets (:class:`~innerloop.automl.meta_features.MetaFeatureScaler`), take the
``num_neighbours`` datasets nearest to the target in Euclidean distance, and evaluate first each
neighbour's best pool configuration, nearest neighbour first, skipping a configuration already
listed; then continue with random search over the rest of the pool
(:func:`~innerloop.automl.search.search_order`). No configuration is evaluated twice.

The baseline a prior must beat besides random search is :func:`global_best_configurations`: the
configurations with the highest mean validation score over all meta-training datasets, the same
for every target (a static portfolio that ignores the meta-features).
"""

from __future__ import annotations

import numpy as np

from innerloop.automl.datasets import TabularDataset
from innerloop.automl.evaluation import evaluate_configuration
from innerloop.automl.knowledge import MetaKnowledge
from innerloop.automl.meta_features import MetaFeatureScaler, meta_features
from innerloop.automl.search import SearchResult, run_search, search_order


def nearest_datasets(target_features: np.ndarray, knowledge: MetaKnowledge,
                     num_neighbours: int) -> tuple[list[int], np.ndarray]:
    """Rows of ``knowledge`` nearest to ``target_features`` (raw meta-features), nearest first
    (ties keep row order), and their distances in standardised meta-feature space."""
    if num_neighbours < 1:
        raise ValueError(f"nearest_datasets: num_neighbours must be at least 1, got {num_neighbours}")
    target_features = np.asarray(target_features, dtype=np.float64)
    if target_features.shape != (len(knowledge.feature_names),):
        raise ValueError(f"nearest_datasets: the target has {target_features.shape} meta-features, the knowledge "
                         f"{len(knowledge.feature_names)} ({', '.join(knowledge.feature_names)})")
    scaler = MetaFeatureScaler.fit(knowledge.meta_features)
    distances = np.linalg.norm(scaler.transform(knowledge.meta_features) - scaler.transform(target_features), axis=1)
    nearest = np.argsort(distances, kind="stable")[:num_neighbours]
    return [int(row) for row in nearest], distances[nearest]


def best_configuration(scores: np.ndarray) -> int:
    """Index of the highest score of one dataset's row (the first on ties)."""
    return int(np.argmax(scores))


def warm_start_configurations(target_features: np.ndarray, knowledge: MetaKnowledge, num_neighbours: int) -> list[int]:
    """The nearest datasets' best configurations, nearest first, without repeats (so at most
    ``num_neighbours`` of them)."""
    neighbours, _ = nearest_datasets(target_features, knowledge, num_neighbours)
    chosen: list[int] = []
    for row in neighbours:
        index = best_configuration(knowledge.scores[row])
        if index not in chosen:
            chosen.append(index)
    return chosen


def global_best_configurations(knowledge: MetaKnowledge, count: int) -> list[int]:
    """The ``count`` configurations with the highest mean score over the knowledge's datasets
    (ties keep pool order)."""
    if count < 0:
        raise ValueError(f"global_best_configurations: count must be non-negative, got {count}")
    return [int(index) for index in np.argsort(-knowledge.scores.mean(axis=0), kind="stable")[:count]]


class WarmStartSearch:
    """Random search over ``knowledge.configurations`` that starts with the best configurations of
    the ``num_neighbours`` nearest meta-training datasets.

    >>> search = WarmStartSearch(knowledge, num_neighbours=5)
    >>> result = search.run(dataset, budget=10, seed=0)   # evaluates 10 configurations on ``dataset``
    >>> result.best_configuration, result.best_score
    """

    def __init__(self, knowledge: MetaKnowledge, num_neighbours: int = 5) -> None:
        if num_neighbours < 1:
            raise ValueError(f"WarmStartSearch: num_neighbours must be at least 1, got {num_neighbours}")
        self.knowledge = knowledge
        self.num_neighbours = num_neighbours

    def order(self, target_features: np.ndarray, seed: int) -> list[int]:
        """Every pool index once: the neighbours' best configurations, then a seeded random order."""
        initial = warm_start_configurations(target_features, self.knowledge, self.num_neighbours)
        return search_order(initial, len(self.knowledge.configurations), seed)

    def run(self, dataset: TabularDataset, budget: int, seed: int = 0) -> SearchResult:
        """Compute ``dataset``'s meta-features, then evaluate the first ``budget`` configurations
        of :meth:`order` on it (train split fit, validation split accuracy)."""
        target_features = np.array(list(meta_features(dataset).values()))
        return run_search(self.knowledge.configurations, self.order(target_features, seed),
                          lambda configuration: evaluate_configuration(configuration, dataset), budget)
