"""AutoML data side: offline datasets and their splits, meta-features against hand-computed values,
the search space and one evaluation, and the errors a user meets (one class, empty data, no sklearn)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

from innerloop.automl import (
    META_FEATURE_NAMES,
    Configuration,
    MetaFeatureScaler,
    TabularDataset,
    build_estimator,
    bundled_datasets,
    configuration_pool,
    evaluate_configuration,
    meta_features,
    split_dataset,
    synthetic_datasets,
)
from innerloop.automl.meta_features import (
    LANDMARK_FOLDS,
    landmark_folds,
    landmark_meta_features,
    statistical_meta_features,
)
from innerloop.automl.search_space import POOL_SHARES
from innerloop.errors import DataError, MissingExtraError


def hand_made_dataset() -> TabularDataset:
    """Feature 0 is ``[0, 0, 0, 4]``, feature 1 constant, feature 2 minus feature 0; labels 0,0,0,1."""
    train_x = np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [4.0, 5.0, -4.0]])
    valid_x = np.array([[0.0, 5.0, 0.0], [4.0, 5.0, -4.0]])
    return TabularDataset("hand-made", train_x, np.array([0, 0, 0, 1]), valid_x, np.array([0, 1]), 2, 0)


def test_meta_features_of_a_hand_made_dataset_match_hand_computed_values():
    values = meta_features(hand_made_dataset())
    assert tuple(values) == META_FEATURE_NAMES
    assert values["log_num_examples"] == pytest.approx(math.log(4))
    assert values["log_num_features"] == pytest.approx(math.log(3))
    assert values["num_classes"] == 2.0
    # class shares 3/4 and 1/4: -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351446 nats
    assert values["class_entropy"] == pytest.approx(0.5623351446, abs=1e-9)
    assert values["class_imbalance"] == pytest.approx(1 / 3)
    # feature 0 centred is (-1, -1, -1, 3): m2 = 3, m3 = 6, m4 = 21 -> skew 6 / 3**1.5, excess kurtosis 21/9 - 3;
    # feature 2 mirrors it (skew of the opposite sign, same |skew|); the constant feature is left out
    assert values["mean_abs_skewness"] == pytest.approx(6 / 3**1.5)
    assert values["mean_kurtosis"] == pytest.approx(21 / 9 - 3)
    assert values["mean_abs_correlation"] == pytest.approx(1.0)  # features 0 and 2: r = -1
    # landmarkers: 3-fold CV within the 4 train rows (class 1 has one row, so plain k-fold). The
    # lone class-1 row is never in its own fold's fit rows, so all three predict class 0 for it:
    # wrong; each class-0 row has an identical class-0 copy among its fit rows (3 copies, at most 2
    # held out together), so 1-NN, the stump and naive Bayes get it right: 3 of 4 correct.
    assert values["landmark_1nn"] == 0.75
    assert values["landmark_stump"] == 0.75
    assert values["landmark_naive_bayes"] == 0.75


def test_meta_features_never_read_the_validation_split():
    # the split a search scores configurations on must not leak into the meta-features: change only
    # the validation split (other rows, other size, labels flipped) and every meta-feature stays equal
    dataset = synthetic_datasets(3, seed=5)[2]
    generator = np.random.default_rng(0)
    other_valid_x = generator.normal(size=(17, dataset.num_features)) * 10.0
    other_valid_y = generator.integers(0, dataset.num_classes, size=17)
    changed = TabularDataset(dataset.name, dataset.train_x, dataset.train_y, other_valid_x, other_valid_y,
                             dataset.num_classes, dataset.split_seed)
    assert meta_features(changed) == meta_features(dataset)
    flipped = TabularDataset(dataset.name, dataset.train_x, dataset.train_y, dataset.valid_x,
                             dataset.num_classes - 1 - dataset.valid_y, dataset.num_classes, dataset.split_seed)
    assert meta_features(flipped) == meta_features(dataset)
    # while changing the train split does move the landmarkers
    shuffled_labels = np.random.default_rng(1).permutation(dataset.train_y)
    relabelled = TabularDataset(dataset.name, dataset.train_x, shuffled_labels, dataset.valid_x, dataset.valid_y,
                                dataset.num_classes, dataset.split_seed)
    assert meta_features(relabelled)["landmark_1nn"] < meta_features(dataset)["landmark_1nn"] - 0.1


def test_landmark_folds_are_stratified_seeded_and_hold_out_every_row_once():
    labels = np.array([0] * 9 + [1] * 6 + [2] * 3)
    folds = landmark_folds(labels)
    assert len(folds) == LANDMARK_FOLDS == 3
    held_out = np.concatenate([rows for _, rows in folds])
    assert sorted(held_out.tolist()) == list(range(18))
    for fit, rows in folds:
        assert np.bincount(labels[rows]).tolist() == [3, 2, 1]  # a third of every class
        assert set(fit.tolist()) | set(rows.tolist()) == set(range(18)) and not set(fit) & set(rows)
    again = landmark_folds(labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    # a class with fewer rows than folds: plain k-fold, still every row held out once
    sparse = landmark_folds(np.array([0, 0, 0, 0, 1]))
    assert sorted(np.concatenate([rows for _, rows in sparse]).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match="at least 2 train examples"):
        landmark_folds(np.array([0]))


def test_landmarkers_are_out_of_fold_accuracies_within_the_train_split():
    # two well separated classes: every held-out row has its class's rows among its fit rows
    x = np.vstack([np.random.default_rng(2).normal(size=(12, 2)), 50.0 + np.random.default_rng(3).normal(size=(12, 2))])
    values = landmark_meta_features(x, np.repeat([0, 1], 12))
    assert values == {"landmark_1nn": 1.0, "landmark_stump": 1.0, "landmark_naive_bayes": 1.0}
    # 12 identical rows, 6 of each class: each stratified fold holds out 2 + 2 and fits on 4 + 4, so the
    # stump cannot split and naive Bayes sees equal priors and likelihoods; both predict class 0 (the
    # first on ties): the 2 class-0 rows right, the 2 class-1 rows wrong in every fold -> 6 / 12
    same = landmark_meta_features(np.ones((12, 2)), np.tile([0, 1], 6))
    assert same["landmark_stump"] == 0.5
    assert same["landmark_naive_bayes"] == 0.5


def test_statistical_meta_features_agree_with_scipy_on_random_data():
    x = np.random.default_rng(3).gamma(2.0, size=(200, 5))
    values = statistical_meta_features(x)
    assert values["mean_abs_skewness"] == pytest.approx(np.abs(stats.skew(x, axis=0)).mean())
    assert values["mean_kurtosis"] == pytest.approx(stats.kurtosis(x, axis=0).mean())
    correlation = np.corrcoef(x, rowvar=False)
    assert values["mean_abs_correlation"] == pytest.approx(np.abs(correlation[np.triu_indices(5, k=1)]).mean())


def test_a_balanced_class_split_has_entropy_log_classes():
    x = np.random.default_rng(0).normal(size=(40, 3))
    dataset = split_dataset("balanced", x, np.repeat([0, 1, 2, 3], 10), seed=0, validation_fraction=0.3)
    values = meta_features(dataset)
    assert values["class_entropy"] == pytest.approx(math.log(4))
    assert values["class_imbalance"] == 1.0  # 7 training examples of every class
    assert values["log_num_examples"] == pytest.approx(math.log(28))


def test_meta_feature_scaler_standardises_columns_and_leaves_constant_ones_finite():
    features = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 8.0]])
    scaler = MetaFeatureScaler.fit(features)
    scaled = scaler.transform(features)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(scaled[:, [0, 2]].std(axis=0), 1.0)
    np.testing.assert_array_equal(scaled[:, 1], 0.0)
    # column 0: mean 2, population std sqrt(8/3); column 1 is constant (5), so its scale is 1: 7 -> 2
    np.testing.assert_allclose(scaler.transform(np.array([6.0, 7.0, 1.0]))[:2], [(6.0 - 2.0) / math.sqrt(8 / 3), 2.0])


def test_split_is_stratified_seeded_and_labels_are_remapped():
    x = np.arange(60, dtype=float).reshape(30, 2)
    y = np.array(["b"] * 20 + ["a"] * 10)
    first = split_dataset("strings", x, y, seed=4, validation_fraction=0.3)
    again = split_dataset("strings", x, y, seed=4, validation_fraction=0.3)
    other = split_dataset("strings", x, y, seed=5, validation_fraction=0.3)
    assert first.num_classes == 2
    assert np.bincount(first.valid_y).tolist() == [3, 6]  # "a" -> 0 (10 examples), "b" -> 1 (20)
    assert np.bincount(first.train_y).tolist() == [7, 14]
    np.testing.assert_array_equal(first.valid_x, again.valid_x)
    assert not np.array_equal(first.valid_x, other.valid_x)
    rows = {tuple(row) for row in np.vstack([first.train_x, first.valid_x])}
    assert rows == {tuple(row) for row in x}  # every example lands in exactly one split


def test_bundled_datasets_have_their_published_sizes():
    sizes = {d.name: (d.num_examples, d.num_features, d.num_classes) for d in bundled_datasets()}
    assert sizes == {"iris": (150, 4, 3), "wine": (178, 13, 3), "breast_cancer": (569, 30, 2),
                     "digits": (1797, 64, 10)}


def test_synthetic_datasets_are_seeded_and_every_class_is_in_both_splits():
    first, again, other = synthetic_datasets(8, seed=1), synthetic_datasets(8, seed=1), synthetic_datasets(8, seed=2)
    assert [d.name for d in first] == ["classification-00", "classification-01", "moons-02", "classification-03",
                                       "circles-04", "quantiles-05", "classification-06", "blobs-07"]
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a.train_x, b.train_x)
        np.testing.assert_array_equal(a.valid_y, b.valid_y)
        assert a.source == b.source
        assert a.train_x.shape != c.train_x.shape or not np.array_equal(a.train_x, c.train_x)
        assert set(np.unique(a.train_y)) == set(np.unique(a.valid_y)) == set(range(a.num_classes))
        assert 300 <= a.num_examples <= 2000
        assert len(a.valid_y) == pytest.approx(0.3 * a.num_examples, abs=a.num_classes)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((0, 3)), np.zeros(0), "empty"),
    (np.ones((6, 2)), np.array([1, 1, 1, 1, 1, 1]), "single class"),
    (np.ones((3, 2)), np.array([0, 1, 1]), "fewer than 2 examples"),
    (np.array([[0.0, np.nan], [1.0, 2.0], [1.0, 1.0], [0.0, 0.0]]), np.array([0, 0, 1, 1]), "NaN"),
])
def test_split_refuses_data_no_search_can_use(x, y, message):
    with pytest.raises(DataError, match=message):
        split_dataset("bad", x, y, seed=0)


def test_meta_features_refuse_a_single_class_training_split():
    dataset = hand_made_dataset()
    one_class = TabularDataset("one-class", dataset.train_x, np.zeros(4, dtype=np.int64), dataset.valid_x,
                               dataset.valid_y, 2, 0)
    with pytest.raises(DataError, match="single class"):
        meta_features(one_class)


def test_missing_sklearn_names_the_automl_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # "import sklearn" now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'innerloop\[automl\]'"):
        split_dataset("any", np.eye(4), np.array([0, 0, 1, 1]), seed=0)


def test_configuration_pool_is_seeded_distinct_and_split_by_family():
    pool = configuration_pool(150, seed=0)
    assert pool == configuration_pool(150, seed=0)
    assert pool != configuration_pool(150, seed=1)
    assert len(set(pool)) == 150
    counts = {model: sum(c.model == model for c in pool) for model in POOL_SHARES}
    expected = {model: int(150 * share) for model, share in POOL_SHARES.items()}
    expected["svm_rbf"] += 150 - sum(expected.values())
    assert counts == expected


def test_svm_gamma_is_relative_to_the_number_of_features():
    configuration = Configuration.of("svm_rbf", log10_C=1.0, log10_gamma_factor=-1.0)
    svm = build_estimator(configuration, num_features=20)[-1]
    assert svm.C == pytest.approx(10.0)
    assert svm.gamma == pytest.approx(0.1 / 20)
    with pytest.raises(ValueError, match="unknown model"):
        Configuration.of("xgboost", depth=3)


def test_evaluation_scores_validation_accuracy():
    dataset = hand_made_dataset()
    assert evaluate_configuration(Configuration.of("knn", n_neighbors=1, weights="uniform"), dataset) == 1.0
    # 5 neighbours of 4 training points are capped at 4: the majority class 0 everywhere -> 1 of 2 right
    assert evaluate_configuration(Configuration.of("knn", n_neighbors=5, weights="uniform"), dataset) == 0.5
