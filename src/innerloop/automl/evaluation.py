"""One evaluation: fit a configuration on a dataset's train split, score accuracy on its validation split.

:func:`evaluate_configuration` is the objective every search calls; :func:`score_table` runs it
for every (dataset, configuration) pair once, which is what the meta-training datasets contribute
to :class:`~innerloop.automl.knowledge.MetaKnowledge` and what makes the leave-one-dataset-out
benchmark a table lookup. Evaluations are deterministic (the forests are seeded), so the table is
the same on every run with the same library versions.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from innerloop.automl.datasets import TabularDataset
from innerloop.automl.dependencies import require_sklearn
from innerloop.automl.search_space import Configuration, build_estimator


def evaluate_configuration(configuration: Configuration, dataset: TabularDataset) -> float:
    """Validation accuracy of ``configuration`` trained on ``dataset``'s train split."""
    require_sklearn()
    from sklearn.exceptions import ConvergenceWarning

    estimator = build_estimator(configuration, dataset.num_features, len(dataset.train_y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a small C's early stop is part of the configuration
        estimator.fit(dataset.train_x, dataset.train_y)
    return float(np.mean(estimator.predict(dataset.valid_x) == dataset.valid_y))


def score_table(datasets: Sequence[TabularDataset], configurations: Sequence[Configuration],
                progress: Callable[[int, TabularDataset, float], None] | None = None) -> np.ndarray:
    """Validation accuracy ``[len(datasets), len(configurations)]`` of every configuration on every
    dataset; ``progress(index, dataset, seconds)`` is called after each dataset's row."""
    table = np.zeros((len(datasets), len(configurations)))
    for row, dataset in enumerate(datasets):
        start = time.perf_counter()
        table[row] = [evaluate_configuration(configuration, dataset) for configuration in configurations]
        if progress is not None:
            progress(row, dataset, time.perf_counter() - start)
    return table
