"""Meta-RL run configuration: YAML recipes (``configs/rl/``) → dataclasses, ``--set`` overrides.

A recipe is a meta-RL recipe when it has an ``env`` section. Unknown keys and impossible values
are refused with a :class:`~innerloop.errors.ConfigError` naming the key, before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from innerloop.config import _apply_override, _build, read_recipe
from innerloop.errors import ConfigError

ALGORITHMS = ("maml-trpo", "maml-ppo", "promp", "cavia", "pretrained", "rl2")


@dataclass
class EnvConfig:
    name: str = "navigation-2d"  # a name of innerloop.rl.envs.ENVIRONMENTS
    options: dict[str, Any] = field(default_factory=dict)  # constructor options, e.g. {horizon: 100}


@dataclass
class PolicyConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    nonlinearity: str = "relu"  # relu | tanh
    init_std: float = 1.0  # Gaussian policies: initial standard deviation of the actions
    context_dim: int = 0  # cavia: size of the adapted context vector (e.g. 5)


@dataclass
class InnerConfig:
    lr: float = 0.1  # step size of the policy-gradient inner update
    steps: int = 1  # inner updates while meta-training (each on fresh episodes)
    first_order: bool = False  # drop the second-order terms of the meta-gradient
    gamma: float = 0.99  # discount
    gae_lambda: float = 1.0  # GAE lambda of the advantages (1: returns minus baseline)


@dataclass
class OuterConfig:
    # maml-trpo, cavia, pretrained: the TRPO step
    max_kl: float = 0.01
    cg_iterations: int = 10
    cg_damping: float = 1e-5
    line_search_steps: int = 15
    line_search_ratio: float = 0.8
    fisher: str = "exact"  # exact (through the adaptation) | first-order (the adapted policies' own Fisher)
    # maml-ppo, promp, rl2: Adam on a clipped surrogate
    lr: float = 1e-3
    epochs: int = 5
    clip: float | None = None  # None: the method's own (maml-ppo and rl2 0.2, promp 0.3 as in its paper)
    grad_clip: float | None = None
    kl_target: float = 0.01  # promp: target of the inner-step KL penalty
    kl_penalty: float = 0.0005  # promp: initial eta of the inner-step KL penalty
    minibatches: int = 4  # rl2: PPO minibatches of whole trials per epoch
    entropy_coef: float = 0.01  # rl2
    value_coef: float = 0.5  # rl2


@dataclass
class TrainConfig:
    iterations: int = 100  # outer updates
    meta_batch_size: int = 20  # tasks per outer update
    episodes_per_task: int = 20  # episodes per task and per adaptation step (rl2: trials per task)
    episodes_per_trial: int = 2  # rl2: episodes of one task the recurrent state carries over
    checkpoint_every: int = 10
    log_every: int = 1


@dataclass
class EvalConfig:
    tasks: int = 40  # fixed test tasks
    episodes_per_task: int = 20
    steps: int = 3  # report the return after 0..steps adaptation steps
    seed: int = 1_000_003  # test tasks: env.sample_tasks(tasks, seed) (training uses other seeds)
    env_options: dict[str, Any] = field(default_factory=dict)  # e.g. {split: test} for Meta-World


@dataclass
class RLConfig:
    name: str = "rl-run"
    seed: int = 0
    num_threads: int = 1
    algorithm: str = "maml-trpo"
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    outer: OuterConfig = field(default_factory=OuterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_rl_recipe(values: Any) -> bool:
    return isinstance(values, dict) and "env" in values


def _mapping(tree: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    """Take a free-form mapping (constructor options) out of ``tree`` before the typed build."""
    part = tree.get(section)
    if not isinstance(part, dict) or key not in part:
        return {}
    value = part.pop(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{section}.{key}: expected a mapping of options, got {value!r}")
    return dict(value)


def rl_config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> RLConfig:
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in dict(values or {}).items()}
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    env_options = _mapping(tree, "env", "options")
    eval_env_options = _mapping(tree, "eval", "env_options")
    config = _build(RLConfig, tree, "")
    config.env.options = env_options
    config.eval.env_options = eval_env_options
    validate_rl(config)
    return config


def load_rl_config(path: str | Path, overrides: list[str] | None = None) -> RLConfig:
    """Read a meta-RL recipe, apply overrides, validate."""
    return rl_config_from_dict(read_recipe(path), overrides)


def validate_rl(config: RLConfig) -> None:
    from innerloop.rl.envs import ENVIRONMENTS

    if config.algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: '{config.algorithm}' is not one of {', '.join(ALGORITHMS)}")
    if config.env.name not in ENVIRONMENTS:
        raise ConfigError(f"env.name: '{config.env.name}' is not one of {', '.join(ENVIRONMENTS)}")
    if config.outer.fisher not in ("exact", "first-order"):
        raise ConfigError(f"outer.fisher: '{config.outer.fisher}' is not one of exact, first-order")
    if config.policy.nonlinearity not in ("relu", "tanh"):
        raise ConfigError(f"policy.nonlinearity: '{config.policy.nonlinearity}' is not one of relu, tanh")
    positive = {"inner.lr": config.inner.lr, "outer.max_kl": config.outer.max_kl, "outer.lr": config.outer.lr,
                "outer.clip": 1.0 if config.outer.clip is None else config.outer.clip, "outer.kl_target": config.outer.kl_target,
                "policy.init_std": config.policy.init_std}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    at_least_one = {"train.iterations": config.train.iterations, "train.meta_batch_size": config.train.meta_batch_size,
                    "train.episodes_per_task": config.train.episodes_per_task, "eval.tasks": config.eval.tasks,
                    "eval.episodes_per_task": config.eval.episodes_per_task, "outer.epochs": config.outer.epochs,
                    "outer.cg_iterations": config.outer.cg_iterations, "train.checkpoint_every": config.train.checkpoint_every,
                    "train.log_every": config.train.log_every}
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    outer = config.outer
    if outer.clip is not None and not 0 < outer.clip < 1:
        raise ConfigError(f"outer.clip must lie in (0, 1), got {outer.clip}")
    if outer.grad_clip is not None and outer.grad_clip <= 0:
        raise ConfigError(f"outer.grad_clip must be positive (or null for none), got {outer.grad_clip}")
    if not 0 < outer.line_search_ratio < 1 or outer.line_search_steps < 1:
        raise ConfigError("outer.line_search_ratio must lie in (0, 1) and outer.line_search_steps be at least 1, got "
                          f"{outer.line_search_ratio} and {outer.line_search_steps}")
    for key in ("cg_damping", "kl_penalty", "entropy_coef", "value_coef"):
        if getattr(outer, key) < 0:
            raise ConfigError(f"outer.{key} must be >= 0, got {getattr(outer, key)}")
    if any(size < 1 for size in config.policy.hidden_sizes):
        raise ConfigError(f"policy.hidden_sizes must be positive, got {config.policy.hidden_sizes}")
    if config.algorithm == "rl2" and len(config.policy.hidden_sizes) != 1:
        raise ConfigError(f"rl2: policy.hidden_sizes is [the GRU's width], got {config.policy.hidden_sizes}")
    for key, value in (("seed", config.seed), ("eval.seed", config.eval.seed)):
        if not 0 <= value < 2 ** 32:
            raise ConfigError(f"{key} must lie in [0, 2^32), got {value}")
    if config.num_threads < 0:
        raise ConfigError(f"num_threads must be >= 0 (0: torch's default), got {config.num_threads}")
    if config.train.episodes_per_trial < 1 or config.outer.minibatches < 1:
        raise ConfigError("train.episodes_per_trial and outer.minibatches must be at least 1")
    if config.inner.steps < 0 or config.eval.steps < 0 or config.policy.context_dim < 0:
        raise ConfigError("inner.steps, eval.steps and policy.context_dim must be >= 0")
    if not 0 <= config.inner.gamma <= 1 or not 0 <= config.inner.gae_lambda <= 1:
        raise ConfigError(f"inner.gamma and inner.gae_lambda must lie in [0, 1], got {config.inner.gamma} "
                          f"and {config.inner.gae_lambda}")
    if config.algorithm == "cavia" and config.policy.context_dim < 1:
        raise ConfigError("cavia adapts a context vector: set policy.context_dim (e.g. 5)")
    if config.algorithm != "cavia" and config.policy.context_dim:
        raise ConfigError(f"policy.context_dim is CAVIA's; {config.algorithm} adapts the weights (set it to 0)")
    if config.algorithm in ("maml-trpo", "maml-ppo", "promp", "cavia") and config.inner.steps < 1:
        raise ConfigError(f"{config.algorithm} needs inner.steps >= 1 (inner.steps 0 is the 'pretrained' algorithm)")
