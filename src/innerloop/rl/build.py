"""Build a meta-RL run's environment and learner from an :class:`~innerloop.rl.config.RLConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from innerloop.errors import ConfigError
from innerloop.rl.config import RLConfig
from innerloop.rl.envs import make_env

if TYPE_CHECKING:
    from innerloop.rl.envs.base import MetaEnv
from innerloop.rl.policies import policy_for


def env_factory(config: RLConfig, extra_options: dict[str, Any] | None = None):
    """A zero-argument function making the run's environment (``extra_options`` override the recipe's)."""
    options = {**config.env.options, **(extra_options or {})}

    def make() -> MetaEnv:
        try:
            return make_env(config.env.name, **options)
        except ValueError as error:
            raise ConfigError(f"env: {error}") from None

    return make


def build_rl_learner(config: RLConfig, env: MetaEnv, env_options: dict[str, Any] | None = None):
    """The learner named by ``config.algorithm`` for ``env``'s spaces (RL² builds its own
    environments: with ``env_options`` over the recipe's, as ``env`` was built)."""
    try:
        return _build_rl_learner(config, env, env_options)
    except ValueError as error:  # a constructor refusing a value the config check let through
        raise ConfigError(f"{config.algorithm}: {error}") from None


def _build_rl_learner(config: RLConfig, env: MetaEnv, env_options: dict[str, Any] | None):
    if config.algorithm == "rl2":
        return RL2Runner(config, env_options)
    policy = policy_for(env, config.policy.hidden_sizes, config.policy.nonlinearity, config.policy.init_std,
                        context_dim=config.policy.context_dim)
    inner = dict(inner_lr=config.inner.lr, inner_steps=config.inner.steps, first_order=config.inner.first_order,
                 gamma=config.inner.gamma, gae_lambda=config.inner.gae_lambda)
    outer = config.outer
    trpo = dict(max_kl=outer.max_kl, cg_iterations=outer.cg_iterations, cg_damping=outer.cg_damping,
                line_search_steps=outer.line_search_steps, line_search_ratio=outer.line_search_ratio,
                fisher=outer.fisher)
    if config.algorithm == "maml-trpo":
        from innerloop.rl.algorithms.maml_trpo import MAMLTRPO

        return MAMLTRPO(policy, **trpo, **inner)
    if config.algorithm == "pretrained":
        from innerloop.rl.algorithms.maml_trpo import MAMLTRPO

        return MAMLTRPO(policy, **trpo, **{**inner, "inner_steps": 0})
    if config.algorithm == "cavia":
        from innerloop.rl.algorithms.cavia_rl import CAVIATRPO

        return CAVIATRPO(policy, **trpo, **inner)
    clip = {} if outer.clip is None else {"clip": outer.clip}  # None: the method's own default
    if config.algorithm == "maml-ppo":
        from innerloop.rl.algorithms.maml_ppo import MAMLPPO

        return MAMLPPO(policy, lr=outer.lr, epochs=outer.epochs, grad_clip=outer.grad_clip, **clip, **inner)
    if config.algorithm == "promp":
        from innerloop.rl.algorithms.promp import ProMP

        return ProMP(policy, lr=outer.lr, epochs=outer.epochs, grad_clip=outer.grad_clip, kl_target=outer.kl_target,
                     kl_penalty=outer.kl_penalty, **clip, **inner)
    raise ConfigError(f"algorithm: '{config.algorithm}' has no builder")


class RL2Runner:
    """RL² behind the meta-RL trainer's and evaluation's interface.

    An iteration runs ``train.episodes_per_task`` trials of ``train.episodes_per_trial`` episodes on
    each of the ``meta_batch_size`` tasks, then RL²'s PPO update; the reported return is the mean
    trial return. Evaluation reports the return of each episode of a trial (the recurrent state
    is RL²'s adaptation), ``eval.steps`` is not used. GRU width: ``policy.hidden_sizes[0]``.
    """

    evaluation_label = "episode of the trial"

    def __init__(self, config: RLConfig, env_options: dict[str, Any] | None = None) -> None:
        from innerloop.rl.algorithms.rl2 import RL2

        outer = config.outer
        self.rl2 = RL2(env_factory(config, env_options), episodes_per_trial=config.train.episodes_per_trial,
                       hidden_size=config.policy.hidden_sizes[0],
                       lr=outer.lr, clip_range=0.2 if outer.clip is None else outer.clip, ppo_epochs=outer.epochs,
                       num_minibatches=outer.minibatches, gamma=config.inner.gamma, gae_lambda=config.inner.gae_lambda,
                       value_coef=outer.value_coef, entropy_coef=outer.entropy_coef,
                       max_grad_norm=0.5 if outer.grad_clip is None else outer.grad_clip, init_std=config.policy.init_std)

    def train_iteration(self, rollout, tasks, episodes_per_task: int, seed: int) -> dict[str, float]:
        stats = self.rl2.train_step([task for task in tasks for _ in range(episodes_per_task)], seed)
        trial_return = stats.pop("trial_return")
        return {"return_before": trial_return, "return_after": trial_return, **stats}

    def evaluate_tasks(self, rollout, tasks, episodes_per_task: int, seed: int, steps: int):
        import torch

        per_episode = torch.stack([self.rl2.evaluate_tasks(tasks, seed=seed * 1009 + trial)
                                   for trial in range(episodes_per_task)]).mean(0)
        return {"return": per_episode}

    def state_dict(self) -> dict:
        return self.rl2.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.rl2.load_state_dict(state)
