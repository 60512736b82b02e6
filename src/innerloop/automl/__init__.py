"""Meta-learned priors for AutoML: warm-starting a hyperparameter search on a new dataset from the
best configurations on the most similar datasets (meta-features + nearest datasets).

* :mod:`~innerloop.automl.datasets` — offline tabular classification tasks with seeded splits;
* :mod:`~innerloop.automl.meta_features` — simple, statistical and landmarking meta-features;
* :mod:`~innerloop.automl.search_space` — model families, hyperparameters, a seeded pool;
* :mod:`~innerloop.automl.evaluation` — fit on the train split, accuracy on the validation split;
* :mod:`~innerloop.automl.knowledge` — meta-features and pool scores of meta-training datasets;
* :mod:`~innerloop.automl.search` — search orders (random search, a prior then random search);
* :mod:`~innerloop.automl.warm_start` — nearest datasets, warm-start and global-best priors;
* :mod:`~innerloop.automl.similarity_search` — a model-based continuation (active-testing style);
* :mod:`~innerloop.automl.trajectory` — evaluations needed to reach a score, regret curves.

The datasets, meta-features and models need scikit-learn (``pip install 'innerloop[automl]'``);
importing this package does not.
"""

from innerloop.automl.datasets import (
    TabularDataset,
    bundled_datasets,
    dataset_collection,
    split_dataset,
    synthetic_datasets,
)
from innerloop.automl.evaluation import evaluate_configuration, score_table
from innerloop.automl.knowledge import MetaKnowledge, load_or_build_knowledge
from innerloop.automl.meta_features import META_FEATURE_NAMES, MetaFeatureScaler, meta_feature_matrix, meta_features
from innerloop.automl.search import SearchResult, random_search_order, run_search, search_order
from innerloop.automl.search_space import Configuration, build_estimator, configuration_pool
from innerloop.automl.similarity_search import similarity_search
from innerloop.automl.trajectory import best_so_far, evaluations_to_reach, regret_curve
from innerloop.automl.warm_start import (
    WarmStartSearch,
    global_best_configurations,
    nearest_datasets,
    warm_start_configurations,
)

__all__ = [
    "META_FEATURE_NAMES", "Configuration", "MetaFeatureScaler", "MetaKnowledge", "SearchResult", "TabularDataset",
    "WarmStartSearch", "best_so_far", "build_estimator", "bundled_datasets", "configuration_pool",
    "dataset_collection", "evaluate_configuration", "evaluations_to_reach", "global_best_configurations",
    "load_or_build_knowledge", "meta_feature_matrix", "meta_features", "nearest_datasets", "random_search_order",
    "regret_curve", "run_search", "score_table", "search_order", "similarity_search", "split_dataset",
    "synthetic_datasets", "warm_start_configurations",
]
