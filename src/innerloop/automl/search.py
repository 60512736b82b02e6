"""Search over a fixed pool of configurations: an order to evaluate them in, and running it.

Every search here is an order over the pool's indices with no repeats: a list of ``initial``
indices chosen by a prior (the nearest datasets' best configurations, or the globally best ones),
then the remaining indices in a seeded random order (random search without replacement). Random
search from scratch is the same with no initial indices (Bergstra & Bengio 2012, "Random Search
for Hyper-Parameter Optimization").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from innerloop.automl.search_space import Configuration


def search_order(initial: Sequence[int], num_configurations: int, seed: int) -> list[int]:
    """``initial`` (distinct pool indices), then every other index in the order of
    ``numpy.random.default_rng(seed).permutation``."""
    initial = [int(index) for index in initial]
    if len(set(initial)) != len(initial):
        raise ValueError(f"search_order: initial configurations repeat an index: {initial}")
    outside = [index for index in initial if not 0 <= index < num_configurations]
    if outside:
        raise ValueError(f"search_order: indices {outside} lie outside the pool of {num_configurations}")
    chosen = set(initial)
    rest = [int(index) for index in np.random.default_rng(seed).permutation(num_configurations) if index not in chosen]
    return initial + rest


def random_search_order(num_configurations: int, seed: int) -> list[int]:
    """Random search without replacement: a seeded permutation of the pool."""
    return search_order([], num_configurations, seed)


@dataclass(frozen=True)
class SearchResult:
    """The configurations a search evaluated, in order, and their validation scores."""

    configurations: tuple[Configuration, ...]
    scores: np.ndarray

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.scores))

    @property
    def best_configuration(self) -> Configuration:
        return self.configurations[self.best_index]

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_index])


def run_search(pool: Sequence[Configuration], order: Sequence[int], objective: Callable[[Configuration], float],
               budget: int) -> SearchResult:
    """Evaluate ``objective`` on the first ``budget`` configurations of ``order``."""
    if budget < 1:
        raise ValueError(f"run_search: budget must be at least 1 evaluation, got {budget}")
    chosen = tuple(pool[index] for index in list(order)[:budget])
    return SearchResult(chosen, np.array([objective(configuration) for configuration in chosen], dtype=np.float64))
