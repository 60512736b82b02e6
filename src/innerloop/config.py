"""Typed run configuration: YAML → dataclasses, with ``--set key=value`` overrides.

Unknown keys, wrong types and impossible values are rejected with a :class:`ConfigError` that
names the key and what is allowed, before any data is loaded or any model is built.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from innerloop.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "omniglot"
    root: str | None = None  # None: --data-root, else $INNERLOOP_DATA, else the user cache
    image_size: int = 28
    rotations: list[int] = field(default_factory=lambda: [0, 90, 180, 270])
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    download: bool = True
    # your own data (innerloop.data.custom): data.root is the image folder or the CSV file
    grayscale: bool = False  # image-folder: one channel instead of RGB
    text_column: str = "text"  # csv-text
    label_column: str = "label"  # csv-text
    min_examples: int = 0  # image-folder, csv-text: leave out classes with fewer examples
    class_fractions: list[float] = field(default_factory=lambda: [0.5, 0.2])  # image-folder, csv-text:
    # the train and val shares of the classes (the rest: test), in a seeded order
    split_seed: int = 0  # image-folder, csv-text
    # cactus: meta-train on tasks made by clustering the train split's images, never its labels
    # (innerloop.unsupervised.cactus, settings in the cactus section); val/test stay labelled
    pseudo_labels: str | None = None


@dataclass
class ModelConfig:
    algorithm: str = "protonet"
    backbone: str = "conv4"
    hidden_channels: int = 64  # conv4
    hidden_sizes: list[int] = field(default_factory=lambda: [40, 40])  # mlp
    # method options (null: the method's own default)
    full_context_embeddings: bool = False  # matching: the paper's FCE LSTMs
    attention_steps: int | None = None  # matching with FCE: steps of the query's attention LSTM (5)
    svm_c: float | None = None  # metaoptnet: the SVM's slack penalty C (0.1)
    solver_steps: int | None = None  # metaoptnet: unrolled iterations of the SVM dual solver (100)
    latent_dim: int | None = None  # leo: per-class latent code (64); np, anp: global latent (128)
    num_samples: int | None = None  # np, anp, versa, platipus: Monte-Carlo samples per task
    num_particles: int | None = None  # bmaml: SVGD particles (5)
    kernel: str | None = None  # dkt: the GP kernel on the learned features, rbf | matern52 (rbf)
    kl_weight: float | None = None  # platipus: weight of the KL term (20 (0.01 / inner.lr)^2 / entries)
    ensemble: int = 1  # > 1: a deep ensemble of this many independently initialised learners


MODEL_OPTION_OWNERS: dict[str, tuple[str, ...]] = {
    "full_context_embeddings": ("matching",), "attention_steps": ("matching",),
    "svm_c": ("metaoptnet",), "solver_steps": ("metaoptnet",), "latent_dim": ("leo", "np", "anp"),
    "num_samples": ("np", "anp", "versa", "platipus"), "num_particles": ("bmaml",),
    "kernel": ("dkt",), "kl_weight": ("platipus",),
}


def without_inapplicable_model_options(values: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config with the method options of other methods removed (runs saved before
    these options defaulted to null carry their old default values)."""
    model = dict(values.get("model") or {})
    algorithm = model.get("algorithm", ModelConfig.algorithm)
    for key, owners in MODEL_OPTION_OWNERS.items():
        if algorithm not in owners:
            model.pop(key, None)
    return {**values, "model": model}


@dataclass
class InnerConfig:
    """The inner loop of gradient-based methods (maml, mamlpp, metasgd, metalstm, anil, boil,
    cavia, imaml, reptile); keys marked with a method's name apply to that method only. LEO's
    latent inner loop takes ``steps`` / ``eval_steps`` steps from the initial step size ``lr``."""

    steps: int = 1  # inner steps while meta-training
    eval_steps: int | None = None  # inner steps at validation/test; None: same as steps
    lr: float = 0.4  # inner learning rate (metasgd: initial value of the learned rates)
    optimizer: str = "sgd"  # sgd | momentum | adam
    order: str = "second"  # second (through the inner gradients) | first (first-order MAML)
    adapt: str | None = None  # all | head | body; None: the method's own (anil: head)
    batch_size: int | None = None  # support examples per inner step; None: all of them
    momentum: float = 0.9  # optimizer: momentum
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    proximal_strength: float = 2.0  # imaml: lambda of the proximal term
    cg_steps: int = 5  # imaml: conjugate-gradient iterations
    cg_damping: float = 0.0  # imaml: added to the Hessian
    context_dim: int = 100  # cavia: size of the per-task context vector
    leader_steps: int = 1  # bmaml: extra SVGD steps of the leader on support + query
    multi_step_loss_steps: int = 5000  # mamlpp: outer steps over which the multi-step loss anneals
    first_order_steps: int = 25000  # mamlpp: outer steps run first order before `order` applies
    transductive: bool = True  # BatchNorm over the query batch (MAML) or support + one query
    vectorize: bool = False  # torch.func.vmap over tasks instead of a loop (slower on CPU)
    checkpoint: bool = False  # second order: recompute inner steps' activations in backward


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "step"  # constant | step | cosine (to min_lr) | linear (to 0)
    min_lr: float = 0.0  # cosine: the rate it reaches at train.steps
    step_size: int = 2000  # step schedule: multiply lr by gamma every step_size steps
    gamma: float = 0.5
    grad_clip: float | None = None  # max global gradient norm; None: no clipping


@dataclass
class TrainConfig:
    steps: int = 10000
    meta_batch_size: int = 1
    ways: int = 60
    shots: int = 1
    queries: int = 5
    log_every: int = 100
    val_every: int = 1000
    val_episodes: int = 300
    checkpoint_every: int = 500
    channels_last: bool = True  # NHWC memory layout of images and weights: faster Conv-4 on CPU
    backward_per_task: bool = True  # MAML, ANIL, BOIL, Meta-SGD, CAVIA, metalstm: free each task's graph
    task_workers: int = 0  # threads taking their tasks in parallel; 0: one per num_threads (or core)
    task_mixup: float = 0.0  # probability that a training task is interpolated with another (MLTI)
    task_mixup_alpha: float = 0.5  # task mixup: lambda ~ Beta(alpha, alpha)


@dataclass
class EvalConfig:
    ways: int = 5
    shots: int = 1
    queries: int = 15
    episodes: int = 1000
    seed: int = 0
    batch_size: int = 50
    inner_steps: list[int] = field(default_factory=list)  # gradient methods: also report these
    dataset: str | None = None  # another dataset to test on (cross-domain, e.g. fashion-mnist); None: the run's
    calibration_bins: int = 15  # equal-width confidence bins of the ECE and reliability diagram
    interval_levels: list[float] = field(default_factory=lambda: [0.5, 0.9, 0.95])  # regression


@dataclass
class CactusConfig:
    """CACTUs pseudo-labels (Hsu et al. 2019), used with ``data.pseudo_labels: cactus``."""

    embedding: str = "pca"  # pca | random-conv4 | autoencoder (innerloop.unsupervised.embeddings)
    embedding_dim: int = 64
    blur_sigma: float = 1.5  # pca: Gaussian blur of the pixels (pixels) before the components
    autoencoder_steps: int = 2000  # autoencoder: its training steps (batches of 128)
    clusters: int = 500  # k of k-means in every partition
    partitions: int = 50  # k-means partitions (0: unscaled embedding, others randomly scaled)
    kmeans_iterations: int = 100


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    num_threads: int = 2  # torch intra-op threads; 0 keeps torch's default
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cactus: CactusConfig = field(default_factory=CactusConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        if len(options) == 2 and type(None) in options:  # Optional[X]: X's own message
            (option,) = [o for o in options if o is not type(None)]
            return _coerce(value, option, key)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_type)}, got {value!r}")
        return [_coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {value!r}")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        where = f"'{prefix}'" if prefix else "the top level"
        raise ConfigError(f"unknown key '{(prefix + '.' if prefix else '') + str(unknown[0])}'; "
                          f"keys allowed at {where}: {', '.join(names)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value (e.g. train.steps=100), got '{assignment}'")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key}: '{raw}' is not a valid YAML value ({error})") from None


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Build and validate a :class:`Config` from nested dicts plus ``key=value`` overrides."""
    tree = dict(values or {})
    if "env" in tree:
        raise ConfigError("this is a meta-RL recipe (it has an 'env' section): train it with `innerloop train`, "
                          "or load it with innerloop.rl.config.load_rl_config")
    if "experiment" in tree:
        raise ConfigError("this is a hyperparameter-learning recipe (it names an 'experiment'): run it with "
                          "`innerloop train`, or load it with innerloop.bilevel.recipe.load_recipe")
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in tree.items()}
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    config = _build(Config, tree, "")
    validate(config)
    return config


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe's values, or a :class:`ConfigError` saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe, apply overrides, validate."""
    return config_from_dict(read_recipe(path), overrides)


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def _choice(key: str, value: str, allowed: typing.Iterable[str]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")


def _at_least(key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")


def validate(config: Config) -> None:
    """Reject impossible values, naming the key and the allowed range."""
    from innerloop.algorithms import ALGORITHMS
    from innerloop.data import DATASETS, dataset_spec
    from innerloop.nn import BACKBONES
    from innerloop.tasks.sampler import check_episode_shape
    from innerloop.errors import TaskError

    _choice("data.dataset", config.data.dataset, DATASETS)
    spec = dataset_spec(config)  # your own data: read from data.root, its classes checked
    _choice("model.algorithm", config.model.algorithm, ALGORITHMS)
    _choice("model.backbone", config.model.backbone, BACKBONES)
    _choice("optim.name", config.optim.name, ("adam", "sgd"))
    _choice("optim.schedule", config.optim.schedule, ("constant", "step", "cosine", "linear"))
    if not 0 <= config.optim.min_lr <= config.optim.lr:
        raise ConfigError(f"optim.min_lr must be in [0, optim.lr = {config.optim.lr}], "
                          f"got {config.optim.min_lr}")
    _at_least("seed", config.seed, 0)
    _at_least("num_threads", config.num_threads, 0)
    _at_least("train.task_workers", config.train.task_workers, 0)
    _validate_inner(config)
    _common_ranges(config)
    _validate_task_mixup(config, spec)
    _at_least("optim.weight_decay", config.optim.weight_decay, 0.0)
    _at_least("optim.step_size", config.optim.step_size, 1)
    if not 0 < config.optim.gamma <= 1:
        raise ConfigError(f"optim.gamma must be in (0, 1], got {config.optim.gamma}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise ConfigError(f"optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    if config.optim.grad_clip is not None and config.model.ensemble > 1:
        raise ConfigError("optim.grad_clip clips the global norm over all ensemble members, which "
                          "would couple them; remove it or train the members as separate runs")
    _at_least("eval.seed", config.eval.seed, 0)
    _validate_model_options(config)
    algorithm = ALGORITHMS[config.model.algorithm]
    if spec.kind not in algorithm.task_kinds:
        handles = [name for name, cls in ALGORITHMS.items() if spec.kind in cls.task_kinds]
        raise ConfigError(f"model.algorithm: {config.model.algorithm} does not do {spec.kind} "
                          f"({config.data.dataset} is a {spec.kind} dataset); use one of "
                          f"{', '.join(handles)}")
    _validate_evaluation_dataset(config, spec)
    _validate_pseudo_labels(config, spec)
    if spec.kind == "regression":
        _validate_regression(config)
        return
    if spec.modality in ("text", "features", "tokens"):
        vectors = {"text": "sentence embeddings", "features": "feature vectors",
                   "tokens": "token ids"}[spec.modality]
        if list(config.data.rotations) != [0]:
            raise ConfigError(f"data.rotations must be [0] for {spec.name} ({vectors}; "
                              f"rotations apply to images), got {config.data.rotations}")
        if spec.modality == "tokens" and config.model.backbone not in ("minilm", "custom"):
            raise ConfigError(f"model.backbone: {spec.name} holds token ids; use minilm (the sentence "
                              f"encoder, its top layer trained), or {spec.name.removesuffix('-tokens')} "
                              f"for cached embeddings under an mlp")
        if spec.modality != "tokens" and config.model.backbone not in ("mlp", "residual-mlp", "custom"):
            raise ConfigError(f"model.backbone: {spec.name} holds {spec.channels}-d {vectors}; "
                              f"use mlp or residual-mlp (or your own module: custom)"
                              + (f"; to train the encoder itself use {spec.name}-tokens with minilm"
                                 if config.model.backbone == "minilm" and f"{spec.name}-tokens" in DATASETS else ""))
    else:
        _validate_images(config, spec)
    train, evaluation = config.train, config.eval
    rotations = tuple(config.data.rotations)
    shapes = [("train", "train_split", train.ways, train.shots, train.queries),
              ("eval", "val_split", evaluation.ways, evaluation.shots, evaluation.queries),
              ("eval", "test_split", evaluation.ways, evaluation.shots, evaluation.queries)]
    for section, split_key, ways, shots, queries in shapes:
        split = getattr(config.data, split_key)
        _choice(f"data.{split_key}", split, spec.splits)
        if split_key == "test_split" and config.eval.dataset not in (None, config.data.dataset):
            continue  # the test episodes come from eval.dataset, checked below
        try:
            check_episode_shape(split, spec.num_classes(split, rotations), spec.smallest_class(split),
                                ways, shots, queries)
        except TaskError as error:
            raise ConfigError(f"{section}.ways/shots/queries: {error}") from None


def _validate_evaluation_dataset(config: Config, spec: Any) -> None:
    """``eval.dataset``: a dataset of the same kind of inputs as the training one (cross-domain
    evaluation), with enough classes and examples for the evaluation episodes in its test split."""
    name = config.eval.dataset
    if name is None or name == config.data.dataset:
        return
    from innerloop.data import DATASETS
    from innerloop.errors import TaskError
    from innerloop.tasks.sampler import check_episode_shape

    _choice("eval.dataset", name, DATASETS)
    target = DATASETS[name]
    if name.split("-")[0] == config.data.dataset.split("-")[0]:  # clinc150 / clinc150-cross-domain
        raise ConfigError(f"eval.dataset: {name} and {config.data.dataset} split the same corpus "
                          f"differently, so some of one's test classes are the other's training "
                          f"classes; train a run on {name} to score it there")
    if target.describe is not None:  # image-folder, csv-text, registered data: read from data.root
        raise ConfigError(f"eval.dataset: {name} is your own data, which a run reads from its own "
                          f"data.root; to test on it, train (or evaluate) a run whose data.dataset is {name}")
    if (target.kind, target.modality, target.channels) != (spec.kind, spec.modality, spec.channels):
        raise ConfigError(f"eval.dataset: {name} holds {target.modality} {target.kind} data with "
                          f"{target.channels} channel(s); the run was trained on {spec.name} "
                          f"({spec.modality}, {spec.channels} channel(s)): pick a dataset of the same kind")
    if "test" not in target.splits:
        raise ConfigError(f"eval.dataset: {name} has no 'test' split (it has {', '.join(target.splits)})")
    if spec.modality == "image" and config.data.image_size > target.max_image_size:
        raise ConfigError(f"eval.dataset: {name}'s images are {target.max_image_size} pixels wide, "
                          f"smaller than the run's data.image_size {config.data.image_size}")
    evaluation = config.eval
    try:
        check_episode_shape("test", target.num_classes("test", (0,)), target.examples_per_class,
                            evaluation.ways, evaluation.shots, evaluation.queries)
    except TaskError as error:
        raise ConfigError(f"eval.ways/shots/queries on eval.dataset {name}: {error}") from None


def _validate_pseudo_labels(config: Config, spec: Any) -> None:
    """``data.pseudo_labels: cactus`` and the ``cactus`` section: image classification data, a
    known embedding, and at least ``train.ways`` clusters (whether enough clusters hold
    ``shots + queries`` images is known after clustering, and checked then)."""
    if config.data.pseudo_labels is None:
        return
    from innerloop.unsupervised.embeddings import EMBEDDINGS

    _choice("data.pseudo_labels", config.data.pseudo_labels, ("cactus",))
    if spec.kind != "classification" or spec.modality != "image":
        raise ConfigError(f"data.pseudo_labels: cactus clusters images; {config.data.dataset} holds "
                          f"{spec.modality} {spec.kind} data (remove data.pseudo_labels)")
    cactus = config.cactus
    _choice("cactus.embedding", cactus.embedding, EMBEDDINGS)
    for key in ("embedding_dim", "clusters", "partitions", "kmeans_iterations", "autoencoder_steps"):
        _at_least(f"cactus.{key}", getattr(cactus, key), 1)
    _at_least("cactus.blur_sigma", cactus.blur_sigma, 0.0)
    if cactus.clusters < config.train.ways:
        raise ConfigError(f"cactus.clusters ({cactus.clusters}) < train.ways ({config.train.ways}): a "
                          f"{config.train.ways}-way task needs that many clusters; raise cactus.clusters "
                          f"or lower train.ways")


def _validate_images(config: Config, spec: Any) -> None:
    """Image size, rotations and backbone of an image dataset."""
    _at_least("data.image_size", config.data.image_size, 1 if config.model.backbone == "custom" else 16)
    if config.data.image_size > spec.max_image_size:
        raise ConfigError(f"data.image_size must be <= {spec.max_image_size} for {spec.name} "
                          f"(its images are {spec.max_image_size} pixels wide), got {config.data.image_size}")
    if not config.data.rotations or any(r % 90 for r in config.data.rotations):
        raise ConfigError(f"data.rotations must be a non-empty list of multiples of 90, "
                          f"got {config.data.rotations}")
    if len({r % 360 for r in config.data.rotations}) != len(config.data.rotations):
        raise ConfigError(f"data.rotations has repeated angles: {config.data.rotations}")
    _at_least("model.hidden_channels", config.model.hidden_channels, 1)
    if config.model.backbone in ("mlp", "residual-mlp", "minilm"):
        raise ConfigError(f"model.backbone: {config.model.backbone} takes vector inputs; {spec.name} has "
                          f"images, use conv4")


def _validate_model_options(config: Config) -> None:
    """Method options: in range, and given only to the methods that use them."""
    model = config.model
    for key in ("attention_steps", "solver_steps", "latent_dim", "num_samples", "num_particles",
                "ensemble"):
        if getattr(model, key) is not None:
            _at_least(f"model.{key}", getattr(model, key), 1)
    if model.svm_c is not None and model.svm_c <= 0:
        raise ConfigError(f"model.svm_c must be > 0, got {model.svm_c}")
    if model.kl_weight is not None and model.kl_weight < 0:
        raise ConfigError(f"model.kl_weight must be >= 0, got {model.kl_weight}")
    if model.kernel is not None:
        from innerloop.algorithms.probabilistic.deep_kernel_transfer import DKT_KERNELS

        _choice("model.kernel", model.kernel, DKT_KERNELS)
    for key, owners in MODEL_OPTION_OWNERS.items():
        if getattr(model, key) not in (None, False) and model.algorithm not in owners:
            raise ConfigError(f"model.{key} applies to {', '.join(owners)} only; {model.algorithm} "
                              f"does not use it (remove it)")


def _validate_task_mixup(config: Config, spec: Any) -> None:
    """``train.task_mixup`` (:mod:`innerloop.tasks.task_mixup`): a probability, a positive Beta
    parameter, and classification tasks only (their inputs are images or feature vectors)."""
    train = config.train
    if not 0 <= train.task_mixup <= 1:
        raise ConfigError(f"train.task_mixup is the probability that a training task is mixed; it "
                          f"must be in [0, 1], got {train.task_mixup}")
    if train.task_mixup_alpha <= 0:
        raise ConfigError(f"train.task_mixup_alpha must be > 0 (lambda ~ Beta(alpha, alpha)), "
                          f"got {train.task_mixup_alpha}")
    if train.task_mixup > 0 and spec.modality == "tokens":
        raise ConfigError(f"train.task_mixup interpolates inputs, and {config.data.dataset} holds token ids; "
                          f"use {config.data.dataset.removesuffix('-tokens')} (embeddings) or set train.task_mixup: 0")
    if train.task_mixup > 0 and spec.kind != "classification":
        raise ConfigError(f"train.task_mixup interpolates the images or feature vectors of classification "
                          f"tasks class by class; {config.data.dataset} is a {spec.kind} dataset "
                          f"(set train.task_mixup: 0)")


def _common_ranges(config: Config) -> None:
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {config.optim.lr}")
    for key in ("steps", "meta_batch_size", "log_every", "val_every", "val_episodes",
                "checkpoint_every", "shots", "queries"):
        _at_least(f"train.{key}", getattr(config.train, key), 1)
    for key in ("episodes", "batch_size", "shots", "queries", "calibration_bins"):
        _at_least(f"eval.{key}", getattr(config.eval, key), 1)
    for index, level in enumerate(config.eval.interval_levels):
        if not 0 < level < 1 or round(level, 4) != level:
            raise ConfigError(f"eval.interval_levels[{index}] must be in (0, 1) with at most 4 "
                              f"decimals, got {level}")
    if len(set(config.eval.interval_levels)) != len(config.eval.interval_levels):
        raise ConfigError(f"eval.interval_levels has repeated levels: {config.eval.interval_levels}")


def _validate_inner(config: Config) -> None:
    """The inner-loop keys, and which algorithms they apply to."""
    from innerloop.algorithms import ALGORITHMS, GradientLearner
    from innerloop.data import DATASETS
    from innerloop.functional import ORDERS, PARAMETER_FILTERS

    inner = config.inner
    gradient_based = issubclass(ALGORITHMS[config.model.algorithm], GradientLearner)
    _at_least("inner.steps", inner.steps, 0)
    if inner.eval_steps is not None:
        _at_least("inner.eval_steps", inner.eval_steps, 0)
    if inner.lr <= 0:
        raise ConfigError(f"inner.lr must be > 0, got {inner.lr}")
    _choice("inner.optimizer", inner.optimizer, ("sgd", "momentum", "adam"))
    _choice("inner.order", inner.order, ORDERS)
    if inner.adapt is not None:
        _choice("inner.adapt", inner.adapt, PARAMETER_FILTERS)
    if inner.batch_size is not None:
        _at_least("inner.batch_size", inner.batch_size, 1)
    for key in ("adam_beta1", "adam_beta2", "momentum"):
        if not 0 <= getattr(inner, key) < 1:
            raise ConfigError(f"inner.{key} must be in [0, 1), got {getattr(inner, key)}")
    if inner.proximal_strength <= 0:
        raise ConfigError(f"inner.proximal_strength must be > 0, got {inner.proximal_strength}")
    _at_least("inner.cg_steps", inner.cg_steps, 1)
    _at_least("inner.context_dim", inner.context_dim, 1)
    _at_least("inner.leader_steps", inner.leader_steps, 1)
    _at_least("inner.multi_step_loss_steps", inner.multi_step_loss_steps, 0)
    _at_least("inner.first_order_steps", inner.first_order_steps, 0)
    if inner.checkpoint and config.model.algorithm in ("imaml", "reptile"):
        raise ConfigError(f"inner.checkpoint: {config.model.algorithm} keeps no graph of its inner "
                          f"steps, so there is nothing to checkpoint; remove it")
    if inner.checkpoint and inner.vectorize:
        raise ConfigError("inner.checkpoint runs the inner loop per task: set inner.vectorize: false")
    _at_least("inner.cg_damping", inner.cg_damping, 0.0)
    if config.model.algorithm == "cavia" and inner.adapt is not None:
        raise ConfigError("inner.adapt: cavia adapts its per-task context only; remove inner.adapt")
    if config.model.algorithm == "imaml" and (inner.vectorize or (inner.adapt or "all") != "all"):
        raise ConfigError("imaml adapts all parameters in a per-task loop: remove inner.adapt and "
                          "set inner.vectorize: false")
    for index, steps in enumerate(config.eval.inner_steps):
        _at_least(f"eval.inner_steps[{index}]", steps, 0)
    if not gradient_based and config.eval.inner_steps:
        raise ConfigError(f"eval.inner_steps applies to gradient-based methods; "
                          f"{config.model.algorithm} has no inner steps (remove it)")
    if config.model.algorithm in ("metasgd", "mamlpp") and inner.optimizer != "sgd":
        raise ConfigError(f"inner.optimizer: {config.model.algorithm} learns its SGD rates; use sgd")
    if config.model.algorithm == "metalstm" and inner.optimizer != "sgd":
        raise ConfigError("inner.optimizer: metalstm's inner loop is its learned LSTM update "
                          "(inner.lr and inner.order are not used either); remove inner.optimizer")
    if config.model.algorithm == "metalstm" and (inner.vectorize or inner.checkpoint):
        raise ConfigError("metalstm runs its learned inner loop per task without checkpointing: "
                          "set inner.vectorize and inner.checkpoint to false")
    if config.model.algorithm == "mamlpp":
        if (inner.adapt or "all") != "all":
            raise ConfigError("inner.adapt: mamlpp adapts every weight but its per-step batch-norm "
                              "pairs; remove inner.adapt")
        _at_least("inner.steps", inner.steps, 1)
        steps = config.train.steps
        if inner.order == "second" and inner.first_order_steps >= steps:
            raise ConfigError(f"inner.first_order_steps ({inner.first_order_steps}) >= train.steps "
                              f"({steps}): the run would never reach second order; scale "
                              f"inner.first_order_steps and inner.multi_step_loss_steps with train.steps")
        if inner.multi_step_loss_steps > steps:
            raise ConfigError(f"inner.multi_step_loss_steps ({inner.multi_step_loss_steps}) > train.steps "
                              f"({steps}): the multi-step loss would never finish annealing; scale it "
                              f"with train.steps")
    classification = DATASETS[config.data.dataset].kind == "classification"
    if ALGORITHMS[config.model.algorithm].fixed_ways and classification and config.train.ways != config.eval.ways:
        raise ConfigError(f"eval.ways: {config.model.algorithm} has one output per label of a "
                          f"{config.train.ways}-way task (train.ways), so it is evaluated on "
                          f"{config.train.ways}-way tasks; set eval.ways={config.train.ways} or "
                          f"train a {config.eval.ways}-way recipe")


def _validate_regression(config: Config) -> None:
    """Regression task families: methods that do regression (``task_kinds``) on the MLP, one
    output, ways = 1."""
    from innerloop.data import DATASETS

    if config.model.backbone not in ("mlp", "custom"):
        raise ConfigError(f"model.backbone: {config.data.dataset} has 1-D inputs; use mlp "
                          f"(or your own module: custom)")
    if not config.model.hidden_sizes or min(config.model.hidden_sizes) < 1:
        raise ConfigError(f"model.hidden_sizes must be a non-empty list of sizes >= 1, "
                          f"got {config.model.hidden_sizes}")
    for key in ("train_split", "val_split", "test_split"):
        _choice(f"data.{key}", getattr(config.data, key), DATASETS[config.data.dataset].splits)
    for section in ("train", "eval"):
        if getattr(config, section).ways != 1:
            raise ConfigError(f"{section}.ways must be 1 for the regression dataset "
                              f"{config.data.dataset} (one function per task)")
    _common_ranges(config)
