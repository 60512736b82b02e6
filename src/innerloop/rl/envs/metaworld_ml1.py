"""Meta-World ML1: one manipulation skill, its goal positions as the tasks (Yu et al. 2019,
"Meta-World: A Benchmark and Evaluation for Multi-Task and Meta Reinforcement Learning").

Meta-World's ``ML1(task_name, seed)`` benchmark fixes 50 training and 50 test variations of one
skill (``"reach-v3"``, ``"push-v3"``, ``"pick-place-v3"``, ...; ``metaworld.ML1.ENV_NAMES`` lists
the 50 skills); a variation is the skill's random vector (object and goal positions; for reach,
the puck's start then the goal, 6 numbers). :class:`MetaWorldML1` is a distribution over one
split's variations: ``sample_tasks(n, seed)`` picks ``n`` of them (distinct while ``n`` ≤ 50),
and a task is the JSON-able dict ``{"task_name", "split", "index", "rand_vec"}``. ``set_task``
accepts a task of either split (so a training environment can be evaluated on test tasks) and
refuses one whose ``rand_vec`` is not the benchmark's (a task drawn with another
``benchmark_seed``).

The observation is Meta-World's 39 numbers (float64; the goal is hidden, zeros, as in ML1); the
action is 4 numbers in [-1, 1] (hand displacement and gripper); the reward is the skill's
(``reward_function_version`` "v2", between 0 and 10). An episode is truncated after ``horizon``
steps (500, Meta-World's ``max_path_length``); Meta-World never terminates it, and success does
not end it: ``info["success"]`` (1.0 when the goal is reached at that step, else 0.0) is passed
through so a caller can compute the success rate (Meta-World's: success at any step of the
episode). The start is fixed by the variation (Meta-World adds no initial-state noise; checked
for reach-v3), so ``reset(seed=...)`` only seeds the generators. Tested with metaworld 3.1.1
(its skills are the ``-v3`` ones) on mujoco 3.3.0 and gymnasium 1.4. Needs the ``metaworld``
extra: ``pip install 'innerloop[metaworld]'``.
"""

from __future__ import annotations

import functools

import pickle
from typing import Any

import numpy as np

from innerloop.errors import MissingExtraError
from innerloop.rl.envs.base import MetaEnv, Task, require_keys

METAWORLD_EXTRA_HINT = "pip install 'innerloop[metaworld]' (metaworld==3.1.1 with mujoco==3.3.0)"
SPLITS = ("train", "test")


def _import_metaworld() -> Any:
    try:
        import metaworld
    except ImportError as error:
        raise MissingExtraError(f"MetaWorldML1 needs Meta-World: {METAWORLD_EXTRA_HINT} ({error})") from error
    return metaworld


class MetaWorldML1(MetaEnv):
    """One Meta-World skill over its ML1 goal variations of ``split``."""

    def __init__(self, task_name: str = "reach-v3", split: str = "train", horizon: int = 500,
                 benchmark_seed: int = 0) -> None:
        metaworld = _import_metaworld()
        if task_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"MetaWorldML1: unknown task_name '{task_name}'; choose one of "
                             f"{', '.join(metaworld.ML1.ENV_NAMES)}")
        if split not in SPLITS:
            raise ValueError(f"MetaWorldML1: split must be 'train' or 'test', got {split!r}")
        if horizon < 1:
            raise ValueError(f"MetaWorldML1: horizon must be at least 1, got {horizon}")
        self.task_name, self.split, self.horizon, self.benchmark_seed = task_name, split, horizon, benchmark_seed
        benchmark = _benchmark(task_name, benchmark_seed)
        self._benchmark_tasks = {"train": list(benchmark.train_tasks), "test": list(benchmark.test_tasks)}
        self._rand_vecs = {name: [self._rand_vec_of(task) for task in tasks]
                           for name, tasks in self._benchmark_tasks.items()}
        self._simulator = benchmark.train_classes[task_name]()
        self._simulator.max_path_length = horizon
        self.action_space = self._simulator.action_space
        self._steps_taken = 0
        self._task: Task = {}
        self.set_task(self._task_dict(split, 0))
        self.observation_space = self._simulator.observation_space

    @staticmethod
    def _rand_vec_of(benchmark_task: Any) -> list[float]:
        # Meta-World's Task is (env_name, pickled kwargs); the variation is the kwargs' rand_vec
        return np.asarray(pickle.loads(benchmark_task.data)["rand_vec"], dtype=np.float64).tolist()

    def _task_dict(self, split: str, index: int) -> Task:
        return {"task_name": self.task_name, "split": split, "index": index, "rand_vec": self._rand_vecs[split][index]}

    @property
    def num_tasks(self) -> int:
        """How many variations this environment's split holds (50 in Meta-World 3.1.1)."""
        return len(self._benchmark_tasks[self.split])

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        """``n`` of the split's variations, distinct while ``n`` ≤ :attr:`num_tasks`; seeded."""
        if n < 1:
            raise ValueError(f"sample_tasks: n must be at least 1, got {n}")
        generator = np.random.default_rng(seed)
        indices = generator.choice(self.num_tasks, size=n, replace=n > self.num_tasks)
        return [self._task_dict(self.split, int(index)) for index in indices]

    def set_task(self, task: Task) -> None:
        require_keys(task, ("task_name", "split", "index"), "MetaWorldML1")
        if task["task_name"] != self.task_name:
            raise ValueError(f"MetaWorldML1.set_task: this environment runs '{self.task_name}', "
                             f"the task is of '{task['task_name']}'; make an environment with task_name={task['task_name']!r}")
        split, index = task["split"], task["index"]
        if split not in SPLITS:
            raise ValueError(f"MetaWorldML1.set_task: split must be 'train' or 'test', got {split!r}")
        count = len(self._benchmark_tasks[split])
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
            raise ValueError(f"MetaWorldML1.set_task: index must be an integer in [0, {count}), got {index!r}")
        expected = self._rand_vecs[split][int(index)]
        if "rand_vec" in task and not np.allclose(np.asarray(task["rand_vec"], dtype=np.float64), expected):
            raise ValueError(f"MetaWorldML1.set_task: the task's rand_vec is not variation {index} of this "
                             f"benchmark (benchmark_seed={self.benchmark_seed}); the task was drawn from another "
                             "benchmark_seed — build the environment with that seed")
        self._simulator.set_task(self._benchmark_tasks[split][int(index)])
        self._task = self._task_dict(split, int(index))

    def get_task(self) -> Task:
        return dict(self._task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._simulator.seed(seed)
        observation, _ = self._simulator.reset()
        self._steps_taken = 0
        return observation, {"task": self.get_task()}

    def step(self, action):
        if self._steps_taken >= self.horizon:
            raise RuntimeError(f"MetaWorldML1.step: the episode ended after {self.horizon} steps; call reset()")
        observation, reward, terminated, _, info = self._simulator.step(np.asarray(action, dtype=np.float64))
        self._steps_taken += 1
        truncated = self._steps_taken >= self.horizon and not terminated
        info = {**info, "success": float(info["success"]), "task": self.get_task()}
        return observation, float(reward), bool(terminated), truncated, info

    def close(self) -> None:
        self._simulator.close()


@functools.lru_cache(maxsize=8)
def _benchmark(task_name: str, benchmark_seed: int) -> Any:
    """Meta-World's ML1 benchmark, built once per process (building it instantiates every variation,
    seconds each time; the rollout pool makes one environment copy per episode)."""
    return _import_metaworld().ML1(task_name, seed=benchmark_seed)
