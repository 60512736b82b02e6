"""Random tabular MDPs (Duan et al. 2016, "RL²", §4.2).

A task is an MDP over ``num_states`` states and ``num_actions`` actions: transition
distributions ``P(· | s, a)`` drawn from a flat Dirichlet, mean rewards ``μ(s, a)`` from
N(1, 1); the reward of a step is drawn from N(μ(s, a), 1). Episodes start in state 0 and last
``horizon`` steps (10); the observation is the state as a one-hot vector.
"""

from __future__ import annotations

import numpy as np

from innerloop.rl.envs.base import MetaEnv, Task, require_keys, spaces


class TabularMDP(MetaEnv):
    """The task is ``{"transitions": [S][A][S] probabilities, "mean_rewards": [S][A]}``."""

    def __init__(self, num_states: int = 10, num_actions: int = 5, horizon: int = 10) -> None:
        if num_states < 2 or num_actions < 2 or horizon < 1:
            raise ValueError("TabularMDP: need at least 2 states, 2 actions and a horizon of 1, got "
                             f"{num_states}, {num_actions}, {horizon}")
        self.num_states, self.num_actions, self.horizon = num_states, num_actions, horizon
        self.observation_space = spaces.Box(0.0, 1.0, shape=(num_states,), dtype=np.float32)
        self.action_space = spaces.Discrete(num_actions)
        self._transitions = np.full((num_states, num_actions, num_states), 1.0 / num_states)
        self._mean_rewards = np.ones((num_states, num_actions))
        self._state = 0

    def _draw_task(self, generator: np.random.Generator) -> Task:
        transitions = generator.dirichlet(np.ones(self.num_states), size=(self.num_states, self.num_actions))
        mean_rewards = generator.normal(1.0, 1.0, size=(self.num_states, self.num_actions))
        return {"transitions": transitions.tolist(), "mean_rewards": mean_rewards.tolist()}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("transitions", "mean_rewards"), "TabularMDP")
        transitions = np.asarray(task["transitions"], dtype=np.float64)
        mean_rewards = np.asarray(task["mean_rewards"], dtype=np.float64)
        shape = (self.num_states, self.num_actions)
        if transitions.shape != shape + (self.num_states,) or mean_rewards.shape != shape:
            raise ValueError(f"TabularMDP.set_task: transitions must be {shape + (self.num_states,)} and "
                             f"mean_rewards {shape}; got {transitions.shape} and {mean_rewards.shape}")
        if not np.allclose(transitions.sum(-1), 1.0) or np.any(transitions < 0):
            raise ValueError("TabularMDP.set_task: each transitions[s][a] must be a probability vector")
        self._transitions, self._mean_rewards = transitions, mean_rewards

    def get_task(self) -> Task:
        return {"transitions": self._transitions.tolist(), "mean_rewards": self._mean_rewards.tolist()}

    def _observation(self) -> np.ndarray:
        observation = np.zeros(self.num_states, dtype=np.float32)
        observation[self._state] = 1.0
        return observation

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = 0
        return self._observation(), {}

    def step(self, action):
        action = int(action)
        if not 0 <= action < self.num_actions:
            raise ValueError(f"TabularMDP.step: action must be in [0, {self.num_actions}), got {action!r}")
        reward = float(self.np_random.normal(self._mean_rewards[self._state, action], 1.0))
        self._state = int(self.np_random.choice(self.num_states, p=self._transitions[self._state, action]))
        return self._observation(), reward, False, False, {}
