"""Build a meta-RL run's environment and learner from an :class:`~innerloop.rl.config.RLConfig`."""

from __future__ import annotations

from typing import Any

from innerloop.errors import ConfigError
from innerloop.rl.config import RLConfig
from innerloop.rl.envs import MetaEnv, make_env
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


def build_rl_learner(config: RLConfig, env: MetaEnv):
    """The learner named by ``config.algorithm`` for ``env``'s spaces."""
    if config.algorithm == "rl2":
        from innerloop.rl.algorithms.rl2 import RL2

        return RL2.from_config(config, env)
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
