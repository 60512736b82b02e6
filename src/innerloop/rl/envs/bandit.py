"""Bernoulli multi-armed bandits (Duan et al. 2016, "RL²", §4.1; Mishra et al. 2018, SNAIL, §5.1).

Each task is a ``num_arms``-armed bandit whose arm ``i`` pays 1 with probability ``p_i`` and
0 otherwise, the ``p_i`` drawn independently from U[0, 1]. Every episode is one pull
(``horizon`` 1) from a constant observation; a *trial* of ``N`` pulls on one task is ``N``
episodes, and the score of a meta-learner is its total reward over the trial (the SNAIL paper's
table: K = 5 arms, N = 100 pulls).
"""

from __future__ import annotations

import numpy as np

from innerloop.rl.envs.base import MetaEnv, Task, require_keys, spaces


class BernoulliBandit(MetaEnv):
    """A ``num_arms``-armed Bernoulli bandit; the task is ``{"probabilities": [p_1, ..., p_K]}``."""

    horizon = 1

    def __init__(self, num_arms: int = 5) -> None:
        if num_arms < 2:
            raise ValueError(f"BernoulliBandit: num_arms must be at least 2, got {num_arms}")
        self.num_arms = num_arms
        self.observation_space = spaces.Box(1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_arms)
        self._probabilities = np.full(num_arms, 0.5)

    def _draw_task(self, generator: np.random.Generator) -> Task:
        return {"probabilities": generator.uniform(0.0, 1.0, size=self.num_arms).tolist()}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("probabilities",), "BernoulliBandit")
        probabilities = np.asarray(task["probabilities"], dtype=np.float64)
        if probabilities.shape != (self.num_arms,) or np.any(probabilities < 0) or np.any(probabilities > 1):
            raise ValueError(f"BernoulliBandit.set_task: need {self.num_arms} probabilities in [0, 1], "
                             f"got {task['probabilities']!r}")
        self._probabilities = probabilities

    def get_task(self) -> Task:
        return {"probabilities": self._probabilities.tolist()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action):
        arm = int(action)
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"BernoulliBandit.step: arm must be in [0, {self.num_arms}), got {action!r}")
        reward = float(self.np_random.random() < self._probabilities[arm])
        return np.ones(1, dtype=np.float32), reward, True, False, {}
