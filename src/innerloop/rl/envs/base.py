"""The task-distribution interface every meta-RL environment follows.

A meta-RL environment is a ``gymnasium.Env`` that is also a distribution over tasks: one
instance draws tasks with :meth:`MetaEnv.sample_tasks` and is switched to one with
:meth:`MetaEnv.set_task`, after which ``reset`` / ``step`` behave as that task's MDP. Tasks are
plain dicts of floats and lists (they go into evaluation reports as JSON). Sampling is seeded:
the same ``seed`` gives the same tasks on every machine, independently of any global RNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innerloop.errors import MissingExtraError

try:
    import gymnasium
except ImportError as error:
    raise MissingExtraError(f"the meta-RL environments need gymnasium: pip install 'innerloop[rl]' ({error})") from error

Task = dict[str, Any]
spaces = gymnasium.spaces  # the environments import it from here, so a missing gymnasium names the extra


class MetaEnv(gymnasium.Env):
    """A gymnasium environment over a family of tasks (subclasses set ``horizon``)."""

    horizon: int = 100

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        """``n`` tasks drawn from the distribution; the same ``seed`` gives the same tasks."""
        if n < 1:
            raise ValueError(f"sample_tasks: n must be at least 1, got {n}")
        generator = np.random.default_rng(seed)
        return [self._draw_task(generator) for _ in range(n)]

    def _draw_task(self, generator: np.random.Generator) -> Task:
        raise NotImplementedError

    def set_task(self, task: Task) -> None:
        raise NotImplementedError

    def get_task(self) -> Task:
        raise NotImplementedError


def require_keys(task: Task, keys: tuple[str, ...], env_name: str) -> None:
    """Refuse a task dict that lacks what ``env_name`` needs, naming the missing keys."""
    missing = [key for key in keys if key not in task]
    if missing:
        raise ValueError(f"{env_name}.set_task: the task lacks {', '.join(missing)} "
                         f"(got keys {sorted(task)}); use tasks from sample_tasks()")
