"""Turn a :class:`Config` into objects: the learner, the dataset splits, thread settings."""

from __future__ import annotations

from pathlib import Path

import torch

from innerloop.algorithms import ALGORITHMS, MetaLearner
from innerloop.config import Config
from innerloop.data import DATASETS, ClassSplit
from innerloop.nn import BACKBONES


def build_learner(config: Config) -> MetaLearner:
    """The configured algorithm on the configured backbone, initialised from ``config.seed``.

    With ``train.channels_last`` the weights use the NHWC memory layout (same numbers up to
    floating-point summation order, faster convolutions on CPU).
    """
    spec = DATASETS[config.data.dataset]
    torch.manual_seed(config.seed)
    backbone = BACKBONES[config.model.backbone](
        in_channels=spec.channels,
        hidden_channels=config.model.hidden_channels,
        image_size=config.data.image_size,
    )
    learner = ALGORITHMS[config.model.algorithm](backbone)
    if config.train.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    return learner


def load_splits(config: Config, data_root: str | Path | None, names: list[str]) -> dict[str, ClassSplit]:
    """Load the dataset once (``data_root`` wins over ``data.root``) and return the named splits."""
    spec = DATASETS[config.data.dataset]
    store = spec.load(data_root or config.data.root, image_size=config.data.image_size,
                      download=config.data.download)
    rotations = tuple(config.data.rotations)
    return {name: spec.split(store, name, rotations=rotations) for name in names}


def set_threads(config: Config) -> None:
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
