"""Ant forward/backward tasks (Finn et al. 2017, "Model-Agnostic Meta-Learning", §5.3).

MAML's ant direction task: the task is ``{"direction": ±1}`` (forward or backward along x, each
with probability 1/2) and the reward is

    direction · forward_velocity + healthy_reward − 0.5·‖a‖² − contact_cost,

the forward term replacing Ant-v5's, the other three Ant-v5's own (healthy reward 1 while the
torso height is in [0.2, 1], control cost 0.5·Σ a², contact cost 5·10⁻⁴·Σ clip(F_ext, −1, 1)²;
the same as ProMP's ant, Rothfuss et al. 2019). ``forward_velocity`` is the torso's x position
after minus before the step, over ``dt`` = 0.05 s, as Ant-v5 computes it. The body is
gymnasium's Ant-v5 (tested with gymnasium 1.4 on mujoco 3.3.0): its observation (105 numbers,
float64, contact forces included), its action space (8 torques in [-1, 1]), its initial-state
noise; an episode ends when the ant falls (Ant-v5's termination) or is truncated after
``horizon`` steps (200). Only forward/backward is offered, not the 2-D direction of ProMP's
``AntRandDirec2D``. Needs the ``rl`` extra: ``pip install 'innerloop[rl]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from innerloop.rl.envs.base import Task, require_keys
from innerloop.rl.envs.mujoco_locomotion import LocomotionMetaEnv, require_mujoco


class AntDirection(LocomotionMetaEnv):
    """Walk forward or backward; the task is ``{"direction": 1}`` or ``{"direction": -1}``."""

    def __init__(self, horizon: int = 200) -> None:
        require_mujoco()
        from gymnasium.envs.mujoco.ant_v5 import AntEnv

        super().__init__(AntEnv(), horizon)
        self._direction = 1

    def _forward_position(self) -> float:
        # Ant-v5 measures its main body's position (``xpos`` of body 1, the torso), not the free joint's qpos
        return float(self._simulator.data.xpos[1, 0])

    def _draw_task(self, generator: np.random.Generator) -> Task:
        return {"direction": 1 if generator.random() < 0.5 else -1}

    def set_task(self, task: Task) -> None:
        require_keys(task, ("direction",), "AntDirection")
        direction = task["direction"]
        if isinstance(direction, bool) or direction not in (1, -1):
            raise ValueError(f"AntDirection.set_task: direction must be 1 (forward) or -1 (backward), got {direction!r}")
        self._direction = int(direction)

    def get_task(self) -> Task:
        return {"direction": self._direction}

    def _task_reward(self, forward_velocity: float, action: np.ndarray, body_info: dict[str, Any]) -> tuple[float, dict[str, float]]:
        forward_term = self._direction * forward_velocity
        survive, control, contact = (float(body_info[key]) for key in ("reward_survive", "reward_ctrl", "reward_contact"))
        return forward_term + survive + control + contact, {
            "reward_forward": forward_term, "reward_survive": survive, "reward_ctrl": control, "reward_contact": contact}
