"""2-D point navigation to a random goal (Finn et al. 2017, "Model-Agnostic Meta-Learning", §5.3).

The agent is a point in the plane that starts at the origin; its action is a velocity, clipped
to ``[-max_step, max_step]`` per coordinate; the reward is minus the distance to the task's goal
after the move. Goals are drawn uniformly from ``[-goal_range, goal_range]²`` (the paper's
``[-0.5, 0.5]²``). An episode ends after ``horizon`` steps (100) or when the point is within
``goal_tolerance`` of the goal.
"""

from __future__ import annotations

import numpy as np

from innerloop.rl.envs.base import MetaEnv, Task, require_keys, spaces


class Navigation2D(MetaEnv):
    """Point navigation; the task is ``{"goal": [x, y]}``."""

    def __init__(self, horizon: int = 100, goal_range: float = 0.5, max_step: float = 0.1,
                 goal_tolerance: float = 0.01) -> None:
        if horizon < 1 or goal_range <= 0 or max_step <= 0 or goal_tolerance < 0:
            raise ValueError("Navigation2D: horizon must be >= 1, goal_range and max_step positive, "
                             f"goal_tolerance >= 0 (got {horizon}, {goal_range}, {max_step}, {goal_tolerance})")
        self.horizon = horizon
        self.goal_range = goal_range
        self.max_step = max_step
        self.goal_tolerance = goal_tolerance
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-max_step, max_step, shape=(2,), dtype=np.float32)
        self._goal = np.zeros(2)
        self._position = np.zeros(2)

    def _draw_task(self, generator: np.random.Generator) -> Task:
        return {"goal": generator.uniform(-self.goal_range, self.goal_range, size=2).tolist()}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("goal",), "Navigation2D")
        goal = np.asarray(task["goal"], dtype=np.float64)
        if goal.shape != (2,):
            raise ValueError(f"Navigation2D.set_task: goal must be two numbers, got {task['goal']!r}")
        self._goal = goal

    def get_task(self) -> Task:
        return {"goal": self._goal.tolist()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._position = np.zeros(2)
        return self._position.astype(np.float32), {"task": self.get_task()}

    def step(self, action):
        velocity = np.clip(np.asarray(action, dtype=np.float64), -self.max_step, self.max_step)
        self._position = self._position + velocity
        distance = float(np.linalg.norm(self._position - self._goal))
        reached = distance < self.goal_tolerance
        return self._position.astype(np.float32), -distance, reached, False, {"task": self.get_task()}
