"""Meta-features: a fixed-length description of a dataset, to find similar datasets by distance.

The three groups of the meta-learning literature (Brazdil et al. 2009, "Metalearning:
Applications to Data Mining"; the set Auto-sklearn warm-starts from, Feurer et al. 2015), all
computed from the train split alone. The validation split is what a hyperparameter search scores
its configurations on, so no meta-feature reads it: a landmarker scored there would be an
uncounted evaluation of the target (1-NN's validation accuracy *is* the score of the pool's
``knn(n_neighbors=1)`` configurations).

* simple: ``log_num_examples = log(n_train)``, ``log_num_features = log(d)``, ``num_classes``,
  ``class_entropy = -sum_c p_c log p_c`` (nats, ``p_c`` the class shares of the train labels) and
  ``class_imbalance = min_c count_c / max_c count_c`` (1 when balanced);
* statistical, over the non-constant features: ``mean_abs_skewness`` (mean of ``|m3 / m2**1.5|``),
  ``mean_kurtosis`` (mean excess kurtosis ``m4 / m2**2 - 3``; ``m_k`` the k-th central moment) and
  ``mean_abs_correlation`` (mean ``|Pearson r|`` over distinct feature pairs; 0 with fewer than two);
* landmarkers: cross-validated accuracy of three cheap models on the train split — 1-nearest
  neighbour (standardised features), a decision stump (depth-1 tree) and Gaussian naive Bayes
  (Pfahringer et al. 2000, "Meta-learning by landmarking various learning algorithms"). As in
  Feurer et al. 2015, they are computed by ``LANDMARK_FOLDS``-fold cross-validation within the
  train split (:func:`landmark_folds`: stratified when every class has at least ``LANDMARK_FOLDS``
  train examples, otherwise plain k-fold; shuffled with ``LANDMARK_SEED``); the value is the
  out-of-fold accuracy, ``correct out-of-fold predictions / n_train``.

Before distances are taken, :class:`MetaFeatureScaler` standardises each meta-feature with the
mean and standard deviation over the meta-training datasets (a constant meta-feature gets scale 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from innerloop.automl.datasets import TabularDataset, check_classification_data
from innerloop.automl.dependencies import require_sklearn
from innerloop.errors import DataError

SIMPLE_NAMES = ("log_num_examples", "log_num_features", "num_classes", "class_entropy", "class_imbalance")
STATISTICAL_NAMES = ("mean_abs_skewness", "mean_kurtosis", "mean_abs_correlation")
LANDMARK_NAMES = ("landmark_1nn", "landmark_stump", "landmark_naive_bayes")
META_FEATURE_NAMES = SIMPLE_NAMES + STATISTICAL_NAMES + LANDMARK_NAMES
LANDMARK_FOLDS = 3
LANDMARK_SEED = 0
# How the meta-features are computed; a knowledge cache written under another protocol has its
# meta-features recomputed (innerloop.automl.knowledge.load_or_build_knowledge).
META_FEATURE_PROTOCOL = f"train split only; landmarkers {LANDMARK_FOLDS}-fold CV on train, seed {LANDMARK_SEED}"


def simple_meta_features(train_x: np.ndarray, train_y: np.ndarray) -> dict[str, float]:
    """Sizes and the class distribution of the train split."""
    _, counts = np.unique(train_y, return_counts=True)
    shares = counts / counts.sum()
    return {"log_num_examples": math.log(len(train_y)), "log_num_features": math.log(train_x.shape[1]),
            "num_classes": float(len(counts)), "class_entropy": float(-(shares * np.log(shares)).sum()),
            "class_imbalance": float(counts.min() / counts.max())}


def statistical_meta_features(train_x: np.ndarray) -> dict[str, float]:
    """Shape of the feature distributions and how correlated the features are."""
    centred = train_x - train_x.mean(axis=0)
    second = (centred**2).mean(axis=0)
    varying = second > 1e-12 * np.maximum(1.0, np.abs(train_x).max(axis=0)) ** 2
    if not varying.any():
        return {"mean_abs_skewness": 0.0, "mean_kurtosis": 0.0, "mean_abs_correlation": 0.0}
    centred, second = centred[:, varying], second[varying]
    skewness = (centred**3).mean(axis=0) / second**1.5
    kurtosis = (centred**4).mean(axis=0) / second**2 - 3.0
    mean_abs_correlation = 0.0
    if centred.shape[1] >= 2:
        standardised = centred / np.sqrt(second)
        correlation = standardised.T @ standardised / len(standardised)
        pairs = np.triu_indices(correlation.shape[0], k=1)
        mean_abs_correlation = float(np.abs(correlation[pairs]).mean())
    return {"mean_abs_skewness": float(np.abs(skewness).mean()), "mean_kurtosis": float(kurtosis.mean()),
            "mean_abs_correlation": mean_abs_correlation}


def landmark_folds(train_y: np.ndarray, num_folds: int = LANDMARK_FOLDS,
                   seed: int = LANDMARK_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, held-out rows)`` of a shuffled, seeded k-fold split of the train split:
    stratified when every class has at least ``num_folds`` examples, otherwise plain k-fold
    (``min(num_folds, n_train)`` folds). Every row is held out exactly once."""
    require_sklearn()
    from sklearn.model_selection import KFold, StratifiedKFold

    train_y = np.asarray(train_y)
    if len(train_y) < 2 or num_folds < 2:
        raise DataError(f"landmark_folds: cross-validation needs at least 2 train examples and 2 folds, got "
                        f"{len(train_y)} examples and {num_folds} folds; give a larger train split")
    _, counts = np.unique(train_y, return_counts=True)
    if counts.min() >= num_folds:
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=min(num_folds, len(train_y)), shuffle=True, random_state=seed)
    return [(fit, held_out) for fit, held_out in splitter.split(np.zeros((len(train_y), 1)), train_y)]


def landmark_meta_features(train_x: np.ndarray, train_y: np.ndarray) -> dict[str, float]:
    """Out-of-fold accuracy, within the train split (:func:`landmark_folds`), of 1-NN, a decision
    stump and Gaussian naive Bayes."""
    require_sklearn()
    from sklearn.base import clone
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    landmarkers = {"landmark_1nn": make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=1)),
                   "landmark_stump": DecisionTreeClassifier(max_depth=1, random_state=0),
                   "landmark_naive_bayes": GaussianNB()}
    folds = landmark_folds(train_y)
    correct = dict.fromkeys(landmarkers, 0)
    for fit, held_out in folds:
        for name, model in landmarkers.items():
            # a fold of identical rows gives naive Bayes zero variances (log 0 = -inf); its prediction stands
            with np.errstate(divide="ignore", invalid="ignore"):
                predictions = clone(model).fit(train_x[fit], train_y[fit]).predict(train_x[held_out])
            correct[name] += int((predictions == train_y[held_out]).sum())
    return {name: correct[name] / len(train_y) for name in landmarkers}


def meta_features(dataset: TabularDataset) -> dict[str, float]:
    """All meta-features of ``dataset``, in the order of ``META_FEATURE_NAMES``, computed from its
    train split only (the validation split is never read)."""
    train_x, train_y = np.asarray(dataset.train_x), np.asarray(dataset.train_y)
    check_classification_data(train_x, train_y, f"{dataset.name} (train split)")
    values = {**simple_meta_features(train_x, train_y), **statistical_meta_features(train_x),
              **landmark_meta_features(train_x, train_y)}
    return {name: values[name] for name in META_FEATURE_NAMES}


def meta_feature_matrix(datasets: Sequence[TabularDataset]) -> np.ndarray:
    """Raw meta-features ``[len(datasets), len(META_FEATURE_NAMES)]``."""
    return np.array([list(meta_features(dataset).values()) for dataset in datasets], dtype=np.float64)


@dataclass(frozen=True)
class MetaFeatureScaler:
    """Per-meta-feature ``(value - mean) / scale``, the statistics taken over meta-training datasets."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> MetaFeatureScaler:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"MetaFeatureScaler.fit: need a [datasets, meta-features] matrix with at least one "
                             f"row, got shape {features.shape}")
        scale = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(scale > 0.0, scale, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
