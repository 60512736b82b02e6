"""The search space: five model families and their hyperparameters, and a seeded pool of configurations.

A combined algorithm-and-hyperparameter space in the style of Auto-sklearn (Feurer et al. 2015,
"Efficient and Robust Automated Machine Learning"), kept to models whose one evaluation on the
collection's datasets takes well under a second on one thread:

* ``svm_rbf``: an RBF support vector machine on standardised features, ``C = 10**log10_C`` and
  ``gamma = 10**log10_gamma_factor / num_features`` (the factor is relative to scikit-learn's
  ``"scale"`` choice ``1 / (d · var)``, which is ``1/d`` after standardising, so one configuration
  means the same thing on datasets of different widths);
* ``logistic``: L2 logistic regression on standardised features, ``C = 10**log10_C``;
* ``knn``: k nearest neighbours on standardised features, ``n_neighbors`` and ``weights``;
* ``random_forest`` / ``extra_trees``: 30 trees, ``max_features`` as a fraction of the features and
  ``min_samples_leaf`` (trees are seeded with ``random_state=0``, so an evaluation is deterministic).

:func:`configuration_pool` draws a fixed pool of configurations (the same ``seed`` gives the same
pool); a search picks configurations from the pool without repeating one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from innerloop.automl.dependencies import require_sklearn

MODEL_FAMILIES = ("svm_rbf", "logistic", "knn", "random_forest", "extra_trees")
POOL_SHARES = {"svm_rbf": 0.4, "logistic": 0.12, "knn": 0.14, "random_forest": 0.17, "extra_trees": 0.17}
NUM_TREES = 30

Value = float | int | str


@dataclass(frozen=True, order=True)
class Configuration:
    """One point of the search space: a model family and its hyperparameters (hashable)."""

    model: str
    params: tuple[tuple[str, Value], ...]

    @classmethod
    def of(cls, model: str, **params: Value) -> Configuration:
        if model not in MODEL_FAMILIES:
            raise ValueError(f"unknown model '{model}'; choose from {', '.join(MODEL_FAMILIES)}")
        return cls(model, tuple(sorted(params.items())))

    def as_dict(self) -> dict[str, Value]:
        return dict(self.params)

    def describe(self) -> str:
        return f"{self.model}(" + ", ".join(f"{key}={value}" for key, value in self.params) + ")"


def _draw(model: str, generator: np.random.Generator) -> Configuration:
    if model == "svm_rbf":
        return Configuration.of(model, log10_C=round(float(generator.uniform(-2.0, 3.0)), 2),
                                log10_gamma_factor=round(float(generator.uniform(-3.0, 1.5)), 2))
    if model == "logistic":
        return Configuration.of(model, log10_C=round(float(generator.uniform(-4.0, 3.0)), 2))
    if model == "knn":
        neighbours = int(round(math.exp(generator.uniform(0.0, math.log(60.0)))))
        return Configuration.of(model, n_neighbors=neighbours,
                                weights=str(generator.choice(["uniform", "distance"])))
    return Configuration.of(model, max_features=round(float(generator.uniform(0.05, 1.0)), 2),
                            min_samples_leaf=int(round(math.exp(generator.uniform(0.0, math.log(30.0))))))


def configuration_pool(size: int = 150, seed: int = 0) -> tuple[Configuration, ...]:
    """``size`` distinct configurations, ``POOL_SHARES`` of them from each family (rounded; the
    remainder goes to ``svm_rbf``), drawn from ``numpy.random.default_rng(seed)``."""
    if size < len(MODEL_FAMILIES):
        raise ValueError(f"configuration_pool: size must be at least {len(MODEL_FAMILIES)} (one per family), "
                         f"got {size}")
    generator = np.random.default_rng(seed)
    counts = {model: max(1, int(size * share)) for model, share in POOL_SHARES.items()}
    counts["svm_rbf"] += size - sum(counts.values())
    pool: list[Configuration] = []
    for model, count in counts.items():
        drawn: set[Configuration] = set()
        for _ in range(100 * count):
            if len(drawn) == count:
                break
            configuration = _draw(model, generator)
            if configuration not in drawn:
                drawn.add(configuration)
                pool.append(configuration)
        if len(drawn) < count:
            raise ValueError(f"configuration_pool: could not draw {count} distinct {model} configurations")
    return tuple(pool)


def build_estimator(configuration: Configuration, num_features: int, num_train_examples: int | None = None) -> Any:
    """The unfitted scikit-learn estimator of ``configuration`` for data with ``num_features``
    columns (``n_neighbors`` is capped at ``num_train_examples`` when that is given)."""
    require_sklearn()
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    params = configuration.as_dict()
    if configuration.model == "svm_rbf":
        return make_pipeline(StandardScaler(), SVC(C=10.0 ** float(params["log10_C"]),
                                                   gamma=10.0 ** float(params["log10_gamma_factor"]) / num_features))
    if configuration.model == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=10.0 ** float(params["log10_C"]), max_iter=1000))
    if configuration.model == "knn":
        neighbours = int(params["n_neighbors"])
        if num_train_examples is not None:
            neighbours = min(neighbours, num_train_examples)
        return make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=neighbours, weights=str(params["weights"])))
    if configuration.model in ("random_forest", "extra_trees"):
        forest = RandomForestClassifier if configuration.model == "random_forest" else ExtraTreesClassifier
        return forest(n_estimators=NUM_TREES, max_features=float(params["max_features"]),
                      min_samples_leaf=int(params["min_samples_leaf"]), random_state=0)
    raise ValueError(f"unknown model '{configuration.model}'; choose from {', '.join(MODEL_FAMILIES)}")
