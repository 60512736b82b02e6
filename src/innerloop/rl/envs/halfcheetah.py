"""HalfCheetah velocity and direction tasks (Finn et al. 2017, "Model-Agnostic Meta-Learning", §5.3;
Rothfuss et al. 2019, "ProMP: Proximal Meta-Policy Search").

The body is gymnasium's HalfCheetah-v5 (tested with gymnasium 1.4 on mujoco 3.3.0): its
observation (17 numbers, float64: joint positions without the x coordinate, then velocities),
its action space (6 torques in [-1, 1]), its initial-state noise (0.1) and its step duration
``dt`` = 0.05 s. Only the reward changes, with ``forward_velocity`` = (x after − x before) / dt
as HalfCheetah-v5 computes it:

* :class:`HalfCheetahVelocity` — task ``{"velocity": v}``, ``v ~ U[0, 2]``;
  reward = −|forward_velocity − v| − 0.05·‖a‖².
* :class:`HalfCheetahDirection` — task ``{"direction": ±1}``, each with probability 1/2;
  reward = direction · forward_velocity − 0.05·‖a‖².

The control cost 0.05·‖a‖² is the papers' (0.5 · 0.1 · Σ a²), on the action as given. The
cheetah never falls, so an episode always runs ``horizon`` steps (200, the papers') and is then
truncated. Needs the ``rl`` extra: ``pip install 'innerloop[rl]'``.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from innerloop.rl.envs.base import Task, require_keys
from innerloop.rl.envs.mujoco_locomotion import LocomotionMetaEnv, require_mujoco

CONTROL_COST_WEIGHT = 0.05


def _half_cheetah_body() -> Any:
    require_mujoco()
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    return HalfCheetahEnv()


def _control_cost(action: np.ndarray) -> float:
    return CONTROL_COST_WEIGHT * float(np.sum(np.square(action)))


class HalfCheetahVelocity(LocomotionMetaEnv):
    """Run at a target velocity; the task is ``{"velocity": v}`` with ``v ~ U[0, max_velocity]``."""

    def __init__(self, horizon: int = 200, max_velocity: float = 2.0) -> None:
        if max_velocity <= 0:
            raise ValueError(f"HalfCheetahVelocity: max_velocity must be positive, got {max_velocity}")
        super().__init__(_half_cheetah_body(), horizon)
        self.max_velocity = max_velocity
        self._target_velocity = 0.0

    def _draw_task(self, generator: np.random.Generator) -> Task:
        return {"velocity": float(generator.uniform(0.0, self.max_velocity))}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("velocity",), "HalfCheetahVelocity")
        velocity = task["velocity"]
        if isinstance(velocity, bool) or not isinstance(velocity, numbers.Real) or not np.isfinite(velocity):
            raise ValueError(f"HalfCheetahVelocity.set_task: velocity must be a finite number, got {velocity!r}")
        self._target_velocity = float(velocity)

    def get_task(self) -> Task:
        return {"velocity": self._target_velocity}

    def _task_reward(self, forward_velocity: float, action: np.ndarray, body_info: dict[str, Any]) -> tuple[float, dict[str, float]]:
        velocity_term = -abs(forward_velocity - self._target_velocity)
        control_term = -_control_cost(action)
        return velocity_term + control_term, {"reward_velocity": velocity_term, "reward_ctrl": control_term}


class HalfCheetahDirection(LocomotionMetaEnv):
    """Run forward or backward; the task is ``{"direction": 1}`` or ``{"direction": -1}``."""

    def __init__(self, horizon: int = 200) -> None:
        super().__init__(_half_cheetah_body(), horizon)
        self._direction = 1

    def _draw_task(self, generator: np.random.Generator) -> Task:
        return {"direction": 1 if generator.random() < 0.5 else -1}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("direction",), "HalfCheetahDirection")
        direction = task["direction"]
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"HalfCheetahDirection.set_task: direction must be 1 (forward) or -1 (backward), "
                             f"got {direction!r}")
        self._direction = int(direction)

    def get_task(self) -> Task:
        return {"direction": self._direction}

    def _task_reward(self, forward_velocity: float, action: np.ndarray, body_info: dict[str, Any]) -> tuple[float, dict[str, float]]:
        forward_term = self._direction * forward_velocity
        control_term = -_control_cost(action)
        return forward_term + control_term, {"reward_forward": forward_term, "reward_ctrl": control_term}
