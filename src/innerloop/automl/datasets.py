"""Tabular classification tasks that exist offline, each with a fixed seeded train/validation split.

The collection (:func:`dataset_collection`) is scikit-learn's bundled classification datasets
(iris, wine, breast_cancer, digits: files shipped inside the package, no network) and a seeded
family of synthetic ones (:func:`synthetic_datasets`): ``make_classification`` with varied sizes,
feature counts, informative ratios, class counts, clusters per class, label noise and class
imbalance; ``make_moons`` and ``make_circles`` with noise and added noise features;
``make_gaussian_quantiles``; ``make_blobs``. The same ``seed`` gives the same datasets and splits
on every machine (the generators draw from ``numpy.random.default_rng([seed, index])``).

A split is stratified (:func:`split_dataset`): ``validation_fraction`` of every class goes to the
validation split, so both splits see every class. A hyperparameter configuration is scored by
training on ``train_x, train_y`` and measuring accuracy on ``valid_x, valid_y``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from innerloop.automl.dependencies import require_sklearn
from innerloop.errors import DataError

BUNDLED_NAMES = ("iris", "wine", "breast_cancer", "digits")
SYNTHETIC_FAMILIES = ("classification", "classification", "moons", "classification", "circles", "quantiles",
                      "classification", "blobs")  # dataset i comes from SYNTHETIC_FAMILIES[i % 8]


@dataclass(frozen=True, eq=False)
class TabularDataset:
    """One classification task: features ``[n, d]`` (float64) and labels ``0..num_classes-1``."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    num_classes: int
    split_seed: int
    source: dict[str, Any] = field(default_factory=dict)  # how it was made (loader or generator options)

    @property
    def num_features(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_examples(self) -> int:
        return int(len(self.train_y) + len(self.valid_y))


def check_classification_data(x: np.ndarray, y: np.ndarray, name: str) -> None:
    """Refuse data no classifier can be searched on: empty, mis-shaped, non-finite or one class."""
    if x.ndim != 2:
        raise DataError(f"dataset '{name}': features must be a 2-D array [examples, features], got shape {x.shape}")
    if len(x) != len(y):
        raise DataError(f"dataset '{name}': {len(x)} feature rows but {len(y)} labels; give one label per row")
    if len(y) == 0 or x.shape[1] == 0:
        raise DataError(f"dataset '{name}' is empty (shape {x.shape}); give at least two classes with two "
                        "examples each and at least one feature")
    if not np.isfinite(x).all():
        raise DataError(f"dataset '{name}': features contain NaN or infinity; impute or drop those values first")
    classes = np.unique(y)
    if len(classes) < 2:
        raise DataError(f"dataset '{name}' has a single class ({classes[0]!r}); a classification search needs "
                        "at least two classes")


def split_dataset(name: str, x: np.ndarray, y: np.ndarray, seed: int, validation_fraction: float = 0.3,
                  source: dict[str, Any] | None = None) -> TabularDataset:
    """A :class:`TabularDataset` with a stratified split: ``validation_fraction`` of each class is
    held out (seeded by ``seed``); labels are remapped to ``0..num_classes-1`` in sorted order."""
    require_sklearn()
    from sklearn.model_selection import train_test_split

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    check_classification_data(x, y, name)
    if not 0.0 < validation_fraction < 1.0:
        raise DataError(f"dataset '{name}': validation_fraction must lie in (0, 1), got {validation_fraction}")
    classes, labels, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        small = [str(c) for c, n in zip(classes, counts) if n < 2]
        raise DataError(f"dataset '{name}': classes {', '.join(small)} have fewer than 2 examples; a split needs "
                        "one for training and one for validation in every class (drop those classes)")
    train_x, valid_x, train_y, valid_y = train_test_split(x, labels, test_size=validation_fraction,
                                                          random_state=seed, stratify=labels)
    return TabularDataset(name, train_x, train_y.astype(np.int64), valid_x, valid_y.astype(np.int64),
                          len(classes), seed, dict(source or {}))


def bundled_datasets(seed: int = 0, validation_fraction: float = 0.3) -> list[TabularDataset]:
    """scikit-learn's bundled classification datasets (read from the installed package)."""
    require_sklearn()
    from sklearn import datasets as sklearn_datasets

    loaded = []
    for index, name in enumerate(BUNDLED_NAMES):
        x, y = getattr(sklearn_datasets, f"load_{name}")(return_X_y=True)
        loaded.append(split_dataset(name, x, y, seed=seed * 1000 + index, validation_fraction=validation_fraction,
                                    source={"loader": f"sklearn.datasets.load_{name}"}))
    return loaded


def _log_uniform_int(generator: np.random.Generator, low: int, high: int) -> int:
    return int(round(math.exp(generator.uniform(math.log(low), math.log(high)))))


def _with_noise_features(x: np.ndarray, generator: np.random.Generator, max_extra: int) -> tuple[np.ndarray, int]:
    extra = int(generator.integers(0, max_extra + 1))
    return np.hstack([x, generator.normal(size=(len(x), extra))]), extra


def _make_synthetic(family: str, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from sklearn import datasets as sklearn_datasets

    num_examples = _log_uniform_int(generator, 300, 2000)
    random_state = int(generator.integers(0, 2**31 - 1))
    if family == "classification":
        num_features = max(2, _log_uniform_int(generator, 2, 50))
        num_classes = int(generator.choice([2, 2, 3, 4, 6]))
        clusters = int(generator.choice([1, 2, 3]))
        informative = max(1, math.ceil(num_features * generator.uniform(0.1, 1.0)))
        while num_classes * clusters > 2**informative:  # make_classification's own condition
            informative += 1
        num_features = max(num_features, informative)
        redundant = int((num_features - informative) * generator.uniform(0.0, 0.5))
        weights = None
        if generator.random() < 0.35:  # imbalanced: geometric class shares, the rarest 8-30% of the largest
            ratio = generator.uniform(0.08, 0.3) ** (1.0 / (num_classes - 1))
            shares = ratio ** np.arange(num_classes)
            weights = [float(s) for s in shares / shares.sum()]
        options = {"n_samples": num_examples, "n_features": num_features, "n_informative": informative,
                   "n_redundant": redundant, "n_classes": num_classes, "n_clusters_per_class": clusters,
                   "flip_y": round(float(generator.uniform(0.0, 0.15)), 4),
                   "class_sep": round(float(generator.uniform(0.4, 2.0)), 4), "weights": weights,
                   "random_state": random_state}
        x, y = sklearn_datasets.make_classification(**options)
        return x, y, {"generator": "make_classification", **options}
    if family in ("moons", "circles"):
        options: dict[str, Any] = {"n_samples": num_examples, "random_state": random_state}
        if family == "moons":
            options["noise"] = round(float(generator.uniform(0.05, 0.4)), 4)
            x, y = sklearn_datasets.make_moons(**options)
        else:
            options["noise"] = round(float(generator.uniform(0.03, 0.2)), 4)
            options["factor"] = round(float(generator.uniform(0.3, 0.8)), 4)
            x, y = sklearn_datasets.make_circles(**options)
        x, extra = _with_noise_features(x, generator, 10)
        return x, y, {"generator": f"make_{family}", **options, "noise_features": extra}
    if family == "quantiles":
        options = {"n_samples": num_examples, "n_features": int(generator.integers(2, 11)),
                   "n_classes": int(generator.choice([2, 3, 4])), "random_state": random_state}
        x, y = sklearn_datasets.make_gaussian_quantiles(**options)
        return x, y, {"generator": "make_gaussian_quantiles", **options}
    if family == "blobs":
        options = {"n_samples": num_examples, "n_features": _log_uniform_int(generator, 2, 20),
                   "centers": int(generator.integers(2, 7)),
                   "cluster_std": round(float(generator.uniform(0.5, 4.0)), 4), "random_state": random_state}
        x, y = sklearn_datasets.make_blobs(**options)
        return x, y, {"generator": "make_blobs", **options}
    raise ValueError(f"unknown synthetic family '{family}'; choose from {sorted(set(SYNTHETIC_FAMILIES))}")


def synthetic_datasets(count: int, seed: int = 0, validation_fraction: float = 0.3) -> list[TabularDataset]:
    """``count`` seeded synthetic tasks; dataset ``i`` is ``f"{family}-{i:02d}"`` with family
    ``SYNTHETIC_FAMILIES[i % 8]`` (half ``make_classification``, the rest moons, circles, Gaussian
    quantiles and blobs), drawn from ``numpy.random.default_rng([seed, i])``."""
    require_sklearn()
    if count < 0:
        raise ValueError(f"synthetic_datasets: count must be non-negative, got {count}")
    made = []
    for index in range(count):
        generator = np.random.default_rng([seed, index])
        family = SYNTHETIC_FAMILIES[index % len(SYNTHETIC_FAMILIES)]
        x, y, source = _make_synthetic(family, generator)
        made.append(split_dataset(f"{family}-{index:02d}", x, y, seed=int(generator.integers(0, 2**31 - 1)),
                                  validation_fraction=validation_fraction, source=source))
    return made


def dataset_collection(num_synthetic: int = 56, seed: int = 0,
                       validation_fraction: float = 0.3) -> list[TabularDataset]:
    """The bundled datasets followed by ``num_synthetic`` synthetic ones (60 by default)."""
    return (bundled_datasets(seed, validation_fraction)
            + synthetic_datasets(num_synthetic, seed, validation_fraction))
