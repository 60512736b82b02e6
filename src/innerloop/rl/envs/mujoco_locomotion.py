"""The shared shell of the MuJoCo locomotion task distributions (HalfCheetah, Ant).

A :class:`LocomotionMetaEnv` owns one gymnasium MuJoCo body (``HalfCheetahEnv`` /
``AntEnv``, v5, built directly, without ``gymnasium.make``'s wrappers) and replaces its reward
with the task's: a subclass's ``_task_reward`` turns the body's forward velocity (the x position
before and after the step, over the step's duration ``dt``, as the v5 environments compute it)
and the action into the reward. The shell counts steps and truncates the episode at ``horizon``;
``reset(seed=...)`` seeds the body's initial-state noise, so a seed gives the same start.

Needs the ``rl`` extra (``pip install 'innerloop[rl]'``: gymnasium and ``mujoco==3.3.0``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innerloop.errors import MissingExtraError
from innerloop.rl.envs.base import MetaEnv

MUJOCO_EXTRA_HINT = "pip install 'innerloop[rl]' (gymnasium and mujoco==3.3.0)"


def require_mujoco() -> None:
    """Fail with the install command when MuJoCo (or the renderer's imports gymnasium needs) is missing."""
    try:
        import gymnasium.envs.mujoco  # noqa: F401  (imports mujoco, imageio and packaging)
    except ImportError as error:
        raise MissingExtraError(f"the MuJoCo environments need MuJoCo: {MUJOCO_EXTRA_HINT} ({error})") from error


class LocomotionMetaEnv(MetaEnv):
    """A gymnasium MuJoCo body whose reward is the task's; subclasses define ``_task_reward``."""

    def __init__(self, simulator: Any, horizon: int) -> None:
        if horizon < 1:
            raise ValueError(f"{type(self).__name__}: horizon must be at least 1, got {horizon}")
        self.horizon = horizon
        self._simulator = simulator
        self.observation_space = simulator.observation_space
        self.action_space = simulator.action_space
        self._steps_taken = 0

    @property
    def dt(self) -> float:
        """Simulated seconds per step (frame skip × the model's timestep; 0.05 for both bodies)."""
        return float(self._simulator.dt)

    def _forward_position(self) -> float:
        """The x coordinate whose change per ``dt`` is the forward velocity."""
        return float(self._simulator.data.qpos[0])

    def _task_reward(self, forward_velocity: float, action: np.ndarray, body_info: dict[str, Any]) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        observation, _ = self._simulator.reset(seed=seed)
        self._steps_taken = 0
        return observation, {"task": self.get_task()}

    def step(self, action):
        if self._steps_taken >= self.horizon:
            raise RuntimeError(f"{type(self).__name__}.step: the episode ended after {self.horizon} steps; call reset()")
        action = np.asarray(action, dtype=np.float64)
        position_before = self._forward_position()
        observation, _, terminated, _, body_info = self._simulator.step(action)
        forward_velocity = (self._forward_position() - position_before) / self.dt
        reward, reward_terms = self._task_reward(forward_velocity, action, body_info)
        self._steps_taken += 1
        truncated = self._steps_taken >= self.horizon and not terminated
        info = {"task": self.get_task(), "forward_velocity": forward_velocity, **reward_terms}
        return observation, reward, bool(terminated), truncated, info

    def close(self) -> None:
        self._simulator.close()
