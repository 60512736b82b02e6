"""Meta-RL task distributions by name (``make_env``); MuJoCo and Meta-World ones load lazily.

Every environment is a :class:`~innerloop.rl.envs.base.MetaEnv`: a gymnasium environment with a
seeded ``sample_tasks(n, seed)`` and ``set_task(task)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing base needs gymnasium; the names below do not
    from innerloop.rl.envs.base import MetaEnv

# name -> "module:class"; MuJoCo environments need the `rl` extra (gymnasium + mujoco),
# Meta-World the `metaworld` extra.
ENVIRONMENTS: dict[str, str] = {
    "navigation-2d": "innerloop.rl.envs.navigation:Navigation2D",
    "bandit": "innerloop.rl.envs.bandit:BernoulliBandit",
    "tabular-mdp": "innerloop.rl.envs.tabular_mdp:TabularMDP",
    "halfcheetah-velocity": "innerloop.rl.envs.halfcheetah:HalfCheetahVelocity",
    "halfcheetah-direction": "innerloop.rl.envs.halfcheetah:HalfCheetahDirection",
    "ant-direction": "innerloop.rl.envs.ant:AntDirection",
    "metaworld-ml1": "innerloop.rl.envs.metaworld_ml1:MetaWorldML1",
}


def make_env(name: str, **options: Any) -> MetaEnv:
    """A new instance of the named task distribution, built with ``options``."""
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown meta-RL environment '{name}'; choose one of {', '.join(ENVIRONMENTS)}")
    module_name, class_name = ENVIRONMENTS[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as error:
        raise ValueError(f"environment '{name}' does not take these options {sorted(options)}: {error}") from error


__all__ = ["ENVIRONMENTS", "make_env"]
