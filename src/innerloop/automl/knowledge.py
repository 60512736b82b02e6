"""What the meta-training datasets teach: their meta-features and every pool configuration's score.

:class:`MetaKnowledge` is the prior a warm-started search draws on: for each meta-training dataset
its raw meta-features (:mod:`~innerloop.automl.meta_features`) and the validation accuracy of every
configuration of a fixed pool (:func:`~innerloop.automl.evaluation.score_table`). Building it costs
one evaluation per (dataset, configuration) pair, so :func:`load_or_build_knowledge` caches it in a
``.npz`` file whose name is a hash of the datasets' arrays, the configurations, the meta-feature
names and the scikit-learn version: a changed input builds a new file, never reads stale scores.
The file also records how its meta-features were computed (``META_FEATURE_PROTOCOL``); a file
written under another protocol keeps its scores (the expensive part) and has its meta-features
recomputed from the datasets and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from innerloop.automl.datasets import TabularDataset
from innerloop.automl.dependencies import require_sklearn
from innerloop.automl.evaluation import score_table
from innerloop.automl.meta_features import META_FEATURE_NAMES, META_FEATURE_PROTOCOL, meta_feature_matrix
from innerloop.automl.search_space import Configuration
from innerloop.errors import DataError


@dataclass(frozen=True, eq=False)
class MetaKnowledge:
    """Meta-features ``[datasets, features]`` and scores ``[datasets, configurations]`` of the
    meta-training datasets, rows in the order of ``dataset_names``."""

    dataset_names: tuple[str, ...]
    configurations: tuple[Configuration, ...]
    meta_features: np.ndarray
    scores: np.ndarray
    feature_names: tuple[str, ...] = META_FEATURE_NAMES
    meta_feature_protocol: str = META_FEATURE_PROTOCOL

    def __post_init__(self) -> None:
        num_datasets, num_configurations = len(self.dataset_names), len(self.configurations)
        if self.scores.shape != (num_datasets, num_configurations):
            raise ValueError(f"MetaKnowledge: scores have shape {self.scores.shape}, expected "
                             f"({num_datasets} datasets, {num_configurations} configurations)")
        if self.meta_features.shape != (num_datasets, len(self.feature_names)):
            raise ValueError(f"MetaKnowledge: meta_features have shape {self.meta_features.shape}, expected "
                             f"({num_datasets} datasets, {len(self.feature_names)} meta-features)")

    @property
    def num_datasets(self) -> int:
        return len(self.dataset_names)

    def index(self, name: str) -> int:
        if name not in self.dataset_names:
            raise KeyError(f"no dataset '{name}' in this MetaKnowledge; it has {', '.join(self.dataset_names)}")
        return self.dataset_names.index(name)

    def without(self, index: int | Sequence[int]) -> MetaKnowledge:
        """The knowledge of every dataset but row ``index`` (leave-one-dataset-out), or but the
        rows in ``index`` when it is a sequence (e.g. a whole generator family left out)."""
        keep = ~np.isin(np.arange(self.num_datasets), np.atleast_1d(np.asarray(index, dtype=np.int64)))
        if not keep.any():
            raise ValueError(f"MetaKnowledge.without: leaving out rows {index} leaves no dataset")
        return MetaKnowledge(tuple(name for name, kept in zip(self.dataset_names, keep) if kept),
                             self.configurations, self.meta_features[keep], self.scores[keep], self.feature_names,
                             self.meta_feature_protocol)

    @classmethod
    def build(cls, datasets: Sequence[TabularDataset], configurations: Sequence[Configuration],
              progress: Callable[[int, TabularDataset, float], None] | None = None) -> MetaKnowledge:
        """Compute the meta-features and evaluate every configuration on every dataset."""
        names = [dataset.name for dataset in datasets]
        if len(set(names)) != len(names):
            raise DataError(f"MetaKnowledge.build: dataset names must be distinct, got {names}")
        return cls(tuple(names), tuple(configurations), meta_feature_matrix(datasets),
                   score_table(datasets, configurations, progress))

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (written to a temporary name, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(partial, meta_features=self.meta_features, scores=self.scores,
                 header=np.array(json.dumps({"dataset_names": list(self.dataset_names),
                                             "feature_names": list(self.feature_names),
                                             "meta_feature_protocol": self.meta_feature_protocol,
                                             "configurations": [[c.model, [list(p) for p in c.params]]
                                                                for c in self.configurations]})))
        partial.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> MetaKnowledge:
        with np.load(Path(path), allow_pickle=False) as stored:
            header = json.loads(str(stored["header"]))
            configurations = tuple(Configuration(model, tuple((key, value) for key, value in params))
                                   for model, params in header["configurations"])
            return cls(tuple(header["dataset_names"]), configurations, stored["meta_features"],
                       stored["scores"], tuple(header["feature_names"]),
                       header.get("meta_feature_protocol", "landmarkers on the validation split (before 2026-11-30)"))


def knowledge_key(datasets: Sequence[TabularDataset], configurations: Sequence[Configuration]) -> str:
    """A hash of everything a :class:`MetaKnowledge` is computed from."""
    sklearn = require_sklearn()
    digest = hashlib.sha256()
    digest.update(json.dumps({"sklearn": sklearn.__version__, "features": list(META_FEATURE_NAMES),
                              "configurations": [c.describe() for c in configurations]}).encode())
    for dataset in datasets:
        digest.update(dataset.name.encode())
        for array in (dataset.train_x, dataset.train_y, dataset.valid_x, dataset.valid_y):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_or_build_knowledge(datasets: Sequence[TabularDataset], configurations: Sequence[Configuration],
                            cache_dir: str | Path,
                            progress: Callable[[int, TabularDataset, float], None] | None = None
                            ) -> tuple[MetaKnowledge, Path, bool]:
    """The cached knowledge for exactly these inputs, building and caching it if absent.
    A cached file whose meta-features were computed under another ``META_FEATURE_PROTOCOL`` keeps
    its scores and gets the current meta-features (recomputed, then written back).
    Returns ``(knowledge, cache file, whether the scores were read from the cache)``."""
    path = Path(cache_dir) / f"knowledge-{knowledge_key(datasets, configurations)}.npz"
    if path.is_file():
        knowledge = MetaKnowledge.load(path)
        if knowledge.meta_feature_protocol != META_FEATURE_PROTOCOL:
            knowledge = MetaKnowledge(knowledge.dataset_names, knowledge.configurations, meta_feature_matrix(datasets),
                                      knowledge.scores, META_FEATURE_NAMES, META_FEATURE_PROTOCOL)
            knowledge.save(path)
        return knowledge, path, True
    knowledge = MetaKnowledge.build(datasets, configurations, progress)
    knowledge.save(path)
    return knowledge, path, False
