"""Episodes and vectorised rollouts: several environments per process, stepped in lockstep.

:class:`Episodes` holds one task's batch of episodes time-major — ``observations [T, B, ...]``,
``actions``, ``rewards [T, B]`` and ``mask [T, B]`` (1 for the steps that happened: an episode
that terminates early is padded with zeros to the batch's longest). :class:`VectorRollout` runs
``episodes_per_task`` copies of an environment for each of several tasks at once, one batched
policy call per task and time step, with its own seeded RNGs: the same seed gives the same
episodes, and the global torch and NumPy RNGs are left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from innerloop.functional.params import Params, run
from innerloop.rl.envs.base import MetaEnv, Task


@dataclass
class Episodes:
    """A batch of episodes of one task (time-major, padded with ``mask``)."""

    observations: Tensor  # [T, B, observation_dim]
    actions: Tensor  # [T, B, action_dim] (continuous) or [T, B] (discrete)
    rewards: Tensor  # [T, B]
    mask: Tensor  # [T, B]: 1 where the step happened
    task: Task
    success: Tensor | None = None  # [B]: 1 if the env reported info["success"] at any step (Meta-World)

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.rewards.shape[1]

    def episode_returns(self) -> Tensor:
        """Undiscounted return of each episode, ``[B]``."""
        return (self.rewards * self.mask).sum(0)

    def returns_to_go(self, gamma: float) -> Tensor:
        """``G_t = sum_{k >= t} gamma^(k - t) r_k`` over each episode's own steps, ``[T, B]``."""
        returns = torch.zeros_like(self.rewards)
        running = torch.zeros(self.num_episodes, dtype=self.rewards.dtype)
        for t in reversed(range(self.horizon)):
            running = (self.rewards[t] + gamma * running) * self.mask[t]
            returns[t] = running
        return returns


def sample_actions(distribution: Distribution, generator: torch.Generator) -> Tensor:
    """A draw from ``distribution`` using ``generator`` (not the global RNG)."""
    if isinstance(distribution, Independent) and isinstance(distribution.base_dist, Normal):
        base = distribution.base_dist
        noise = torch.randn(base.loc.shape, generator=generator, dtype=base.loc.dtype)
        return base.loc + base.scale * noise
    if isinstance(distribution, Categorical):
        flat = distribution.probs.reshape(-1, distribution.probs.shape[-1])
        return torch.multinomial(flat, 1, generator=generator).reshape(distribution.probs.shape[:-1])
    raise TypeError(f"cannot sample {type(distribution).__name__} with a generator; "
                    "policies must return Independent(Normal) or Categorical")


class EnvironmentPool:
    """Copies of one environment, made on demand and reused, with the facts about its spaces."""

    def __init__(self, make_env: Callable[[], MetaEnv]) -> None:
        self.make_env = make_env
        self.envs: list[MetaEnv] = [make_env()]
        env = self.envs[0]
        self.horizon = int(env.horizon)
        self.observation_dim = int(math.prod(env.observation_space.shape))
        space = env.action_space
        self.discrete = isinstance(space, spaces.Discrete)
        self.action_dim = int(space.n) if self.discrete else int(math.prod(space.shape))
        self.action_low = None if self.discrete else np.asarray(space.low, dtype=np.float64)
        self.action_high = None if self.discrete else np.asarray(space.high, dtype=np.float64)

    def _pool(self, size: int) -> list[MetaEnv]:
        while len(self.envs) < size:
            self.envs.append(self.make_env())
        return self.envs[:size]


class VectorRollout(EnvironmentPool):
    """Collects episodes for several tasks at once from a pool of environment copies."""

    @torch.no_grad()
    def sample(self, policy: nn.Module, params: Sequence[Params], tasks: Sequence[Task], episodes_per_task: int,
               seed: int) -> list[Episodes]:
        """``episodes_per_task`` episodes of each task, task ``i`` acted on with ``params[i]``."""
        if len(params) != len(tasks):
            raise ValueError(f"one parameter dict per task: got {len(params)} for {len(tasks)} tasks")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be at least 1, got {episodes_per_task}")
        num_tasks, per_task = len(tasks), episodes_per_task
        envs = self._pool(num_tasks * per_task)
        env_seeds = np.random.SeedSequence(seed).generate_state(num_tasks * per_task + 1)
        generator = torch.Generator().manual_seed(int(env_seeds[-1]))
        first = []
        for index, env in enumerate(envs):
            env.set_task(tasks[index // per_task])
            observation, _ = env.reset(seed=int(env_seeds[index]))
            first.append(np.asarray(observation, dtype=np.float32).reshape(-1))
        observation_dim = first[0].shape[0]
        horizon = self.horizon
        observations = torch.zeros(horizon, num_tasks * per_task, observation_dim)
        rewards = torch.zeros(horizon, num_tasks * per_task)
        mask = torch.zeros(horizon, num_tasks * per_task)
        actions: Tensor | None = None
        current = torch.as_tensor(np.stack(first))
        alive = np.ones(num_tasks * per_task, dtype=bool)
        success = torch.zeros(num_tasks * per_task)
        reports_success = False
        for t in range(horizon):
            if not alive.any():
                break
            step_actions = []
            for task_index in range(num_tasks):
                rows = slice(task_index * per_task, (task_index + 1) * per_task)
                step_actions.append(sample_actions(run(policy, params[task_index], current[rows]), generator))
            action_batch = torch.cat(step_actions)
            if actions is None:
                actions = torch.zeros((horizon, *action_batch.shape), dtype=action_batch.dtype)
            observations[t] = current
            actions[t] = action_batch
            mask[t] = torch.as_tensor(alive, dtype=torch.float32)
            sent = action_batch.numpy()
            next_observations = current.clone()
            for index in np.flatnonzero(alive):
                action = int(sent[index]) if self.discrete else np.clip(sent[index], self.action_low, self.action_high)
                observation, reward, terminated, truncated, info = envs[index].step(action)
                rewards[t, index] = float(reward)
                if "success" in info:
                    reports_success = True
                    success[index] = max(float(success[index]), float(info["success"]))
                next_observations[index] = torch.as_tensor(np.asarray(observation, dtype=np.float32).reshape(-1))
                if terminated or truncated:
                    alive[index] = False
            current = next_observations
        assert actions is not None
        return [Episodes(observations[:, i * per_task:(i + 1) * per_task], actions[:, i * per_task:(i + 1) * per_task],
                         rewards[:, i * per_task:(i + 1) * per_task], mask[:, i * per_task:(i + 1) * per_task],
                         dict(tasks[i]), success[i * per_task:(i + 1) * per_task] if reports_success else None)
                for i in range(num_tasks)]
