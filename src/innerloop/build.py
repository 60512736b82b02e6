"""Turn a :class:`Config` into objects: the learner, the dataset splits, samplers, thread settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from innerloop.algorithms import ALGORITHMS, GradientLearner, MetaLearner
from innerloop.algorithms.ensemble import DeepEnsemble
from innerloop.allocator import keep_freed_memory
from innerloop.config import Config
from innerloop.data import DATASETS, ClassSplit, dataset_spec
from innerloop.errors import ConfigError
from innerloop.nn import BACKBONES, VECTOR_BACKBONES
from innerloop.nn.custom_backbone import prepare_backbone
from innerloop.tasks.fixed import TaskSampler
from innerloop.tasks.gp_functions import GaussianProcessSplit, GaussianProcessTasks
from innerloop.tasks.regression import SinusoidTasks
from innerloop.tasks.sampler import EpisodeSampler


def build_backbone(config: Config, batch_norm: str = "running",
                   options: dict[str, Any] | None = None) -> nn.Module:
    """The configured backbone; ``options`` are a method's extra backbone arguments."""
    spec = dataset_spec(config)
    if config.model.backbone in VECTOR_BACKBONES:
        return BACKBONES[config.model.backbone](in_features=spec.channels,
                                                hidden_sizes=tuple(config.model.hidden_sizes))
    return BACKBONES[config.model.backbone](
        in_channels=spec.channels, hidden_channels=config.model.hidden_channels,
        image_size=config.data.image_size, batch_norm=batch_norm,
        channels_last=config.train.channels_last, **(options or {}))


def gradient_learner_options(config: Config) -> dict[str, Any]:
    """The constructor arguments of a gradient-based learner, from ``inner.*`` and the task."""
    spec = DATASETS[config.data.dataset]
    inner = config.inner
    return {
        "outputs": config.train.ways if spec.kind == "classification" else 1,
        "task": spec.kind,
        "inner_steps": inner.steps,
        "eval_inner_steps": inner.eval_steps,
        "inner_lr": inner.lr,
        "order": inner.order,
        "adapt": inner.adapt,
        "inner_optimizer": inner.optimizer,
        "inner_batch_size": inner.batch_size,
        "adam_betas": (inner.adam_beta1, inner.adam_beta2),
        "inner_momentum": inner.momentum,
        "checkpoint": inner.checkpoint,
        "transductive": inner.transductive,
        "vectorize": inner.vectorize,
        "backward_per_task": config.train.backward_per_task,
        "task_workers": config.train.task_workers or max(1, config.num_threads or torch.get_num_threads()),
    }


UserBackbone = nn.Module | Callable[[], nn.Module]


def build_learner(config: Config, backbone: UserBackbone | None = None) -> MetaLearner:
    """The configured algorithm on the configured backbone, initialised from ``config.seed``;
    with ``model.ensemble: M`` a :class:`~innerloop.algorithms.ensemble.DeepEnsemble` of ``M``
    such learners initialised from seeds ``seed, seed + 1, ...`` (member 0 is the single learner).

    ``backbone`` (with ``model.backbone: custom``): your own ``nn.Module``, or a function that
    builds one (called after seeding, once per ensemble member), prepared by
    :func:`~innerloop.nn.custom_backbone.prepare_backbone`.

    With ``train.channels_last`` the library's image models take their inputs and weights in the
    NHWC memory layout (same numbers up to floating-point summation order, faster convolutions on
    CPU); your own module keeps its layout (its ``view`` calls may assume contiguous NCHW).
    """
    if backbone is None and config.model.backbone == "custom":
        raise ConfigError("model.backbone is custom: this run's backbone is your own module, which a "
                          "config cannot rebuild; pass it from Python (backbone=MyNet() to build_learner, "
                          "Trainer, evaluate_run or out_of_scope_run)")
    if (backbone is not None) != (config.model.backbone == "custom"):
        raise ConfigError("model.backbone: set it to custom when you pass your own module as backbone= "
                          "(the run's config then records it), and pass backbone= only then "
                          f"(model.backbone is {config.model.backbone})")
    if isinstance(backbone, nn.Module) and config.model.ensemble > 1:
        raise ConfigError(f"model.ensemble: {config.model.ensemble} members need a backbone each; pass a "
                          f"function that builds your module (backbone=lambda: MyNet()) instead of one module")
    members = [build_single_learner(config, config.seed + index, backbone)
               for index in range(config.model.ensemble)]
    learner = members[0]
    if len(members) > 1:
        learner = DeepEnsemble(members)
        torch.manual_seed(config.seed)  # torch's stream in training does not depend on M
    if (config.train.channels_last and DATASETS[config.data.dataset].kind == "classification"
            and config.model.backbone != "custom"):
        learner = learner.to(memory_format=torch.channels_last)
    return learner


def build_single_learner(config: Config, seed: int, user_backbone: UserBackbone | None = None) -> MetaLearner:
    """One learner of the configured method, initialised from ``seed``."""
    cls = ALGORITHMS[config.model.algorithm]
    torch.manual_seed(seed)
    if user_backbone is None:
        backbone = build_backbone(config, cls.backbone_batch_norm, cls.backbone_options)
    else:
        module = user_backbone if isinstance(user_backbone, nn.Module) else user_backbone()
        backbone = prepare_backbone(module, cls.name, cls.backbone_batch_norm, example_support_batch(config))
    if issubclass(cls, GradientLearner):
        options = gradient_learner_options(config)
        options |= {key: getattr(config.inner, key) for key in getattr(cls, "inner_config_keys", ())}
        options |= {key: value for key in getattr(cls, "model_config_keys", ())
                    if (value := getattr(config.model, key)) is not None}
        return cls(backbone, **options)
    return cls.from_config(backbone, config)


def example_support_batch(config: Config) -> torch.Tensor:
    """Zeros of the shape of a training support set, ``[ways * shots, ...]`` (at least 2 rows)."""
    spec = dataset_spec(config)
    train = config.train
    rows = max(2, train.shots * (train.ways if spec.kind == "classification" else 1))
    if spec.kind == "classification" and spec.modality == "image":
        side = config.data.image_size
        return torch.zeros(rows, spec.channels, side, side)
    return torch.zeros(rows, spec.channels)


def load_splits(config: Config, data_root: str | Path | None, names: list[str]) -> dict[str, Any]:
    """Load the dataset once (``data_root`` wins over ``data.root``; your own data is read from
    ``data.root``) and return the named splits."""
    spec = dataset_spec(config)
    store = spec.load(data_root or config.data.root, image_size=config.data.image_size,
                      download=config.data.download)
    rotations = tuple(config.data.rotations)
    return {name: spec.split(store, name, rotations=rotations) for name in names}


def load_evaluation_split(config: Config, data_root: str | Path | None) -> Any:
    """The split evaluation draws its tasks from: ``data.test_split`` of the run's dataset, or,
    with ``eval.dataset`` set (cross-domain), that dataset's ``test`` split without rotations."""
    if config.eval.dataset in (None, config.data.dataset):
        return load_splits(config, data_root, [config.data.test_split])[config.data.test_split]
    spec = DATASETS[config.eval.dataset]
    # a run on your own data has its folder or CSV as data.root: never look for (or download)
    # the evaluation dataset there
    own_data = DATASETS[config.data.dataset].describe is not None
    root = data_root or (None if own_data else config.data.root)
    store = spec.load(root, image_size=config.data.image_size, download=config.data.download)
    return spec.split(store, "test", rotations=(0,))


def build_sampler(config: Config, split: Any, ways: int, shots: int, queries: int) -> TaskSampler:
    """The episode sampler of the dataset's kind: class episodes or regression tasks."""
    if isinstance(split, GaussianProcessSplit):
        return GaussianProcessTasks(split, shots, queries)
    if DATASETS[config.data.dataset].kind == "regression":
        return SinusoidTasks(split, shots, queries)
    assert isinstance(split, ClassSplit)
    return EpisodeSampler(split, ways, shots, queries)


def build_training_sampler(config: Config, split: Any) -> TaskSampler:
    """The sampler of meta-training tasks: :func:`build_sampler`'s on ``split``, or with
    ``data.pseudo_labels: cactus`` CACTUs tasks made from ``split``'s images without its labels
    (:mod:`innerloop.unsupervised.cactus`)."""
    train = config.train
    if config.data.pseudo_labels == "cactus":
        from innerloop.unsupervised.cactus import cactus_tasks

        return cactus_tasks(config, split)
    return build_sampler(config, split, train.ways, train.shots, train.queries)


def set_threads(config: Config) -> None:
    """Torch's threads as configured, and freed memory kept for reuse (:mod:`innerloop.allocator`)."""
    keep_freed_memory()
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
