"""The meta-RL outer loop over iterations: seeded task batches, atomic checkpoints, resumption,
a metrics log and a learning curve.

A run directory holds ``config.yaml``, ``metrics.jsonl`` (one line per iteration: the mean
return before and after adaptation and the outer step's statistics), ``last.pt`` (written
atomically every ``train.checkpoint_every`` iterations and at the end; a crashed run resumes
from it with the same task and episode seeds, as each iteration's seeds depend only on
``(seed, iteration)``) and ``learning_curve.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from innerloop.errors import InnerloopError, TrainingDiverged
from innerloop.rl.build import build_rl_learner, env_factory
from innerloop.rl.config import RLConfig, rl_config_from_dict
from innerloop.rl.rollout import VectorRollout
from innerloop.train.checkpoint import LAST, load_checkpoint, save_checkpoint

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


RESUMABLE_CHANGES = {"name", "train.iterations", "train.log_every", "train.checkpoint_every"}


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("options", "env_options"):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def iteration_seeds(seed: int, iteration: int) -> tuple[int, int]:
    """``(task seed, episode seed)`` of an iteration: a function of the run seed and the index only."""
    state = np.random.SeedSequence([seed, iteration]).generate_state(2)
    return int(state[0]), int(state[1])


@dataclass
class RLTrainResult:
    iterations: int
    seconds: float
    final_return_before: float
    final_return_after: float


def save_rl_config(config: RLConfig, run_dir: Path) -> None:
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


def load_run_config(run_dir: str | Path) -> RLConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise InnerloopError(f"{run_dir} holds no {CONFIG_FILE}; is it a run directory of `innerloop train`?")
    return rl_config_from_dict(yaml.safe_load(path.read_text()))


class RLTrainer:
    """Meta-trains ``config`` in ``run_dir`` (resuming from ``run_dir/last.pt`` when present)."""

    def __init__(self, config: RLConfig, run_dir: str | Path, progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress

    def _check_resumable(self) -> None:
        """Only the length of a run and its logging may change on resume (the rest is the saved run's)."""
        saved = self.run_dir / CONFIG_FILE
        if saved.is_file() and (self.run_dir / LAST).is_file():
            previous = _flat(rl_config_from_dict(yaml.safe_load(saved.read_text())).to_dict())
            current = _flat(self.config.to_dict())
            changed = sorted(key for key in set(previous) | set(current)
                             if previous.get(key) != current.get(key) and key not in RESUMABLE_CHANGES
                             and not key.startswith("eval."))
            if changed:
                raise InnerloopError(f"{self.run_dir} holds a run with a different {', '.join(changed)}; "
                                     "only train.iterations, train.log_every, train.checkpoint_every, name and "
                                     "eval.* may change when resuming: choose another --run-dir or keep those values")

    def fit(self) -> RLTrainResult:
        config = self.config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_resumable()
        save_rl_config(config, self.run_dir)
        torch.manual_seed(config.seed)  # the policy's initial weights
        rollout = VectorRollout(env_factory(config))
        env = rollout.envs[0]
        learner = build_rl_learner(config, env)
        history: list[dict[str, float]] = []
        start = 0
        checkpoint_path = self.run_dir / LAST
        if checkpoint_path.is_file():
            state = load_checkpoint(checkpoint_path)
            learner.load_state_dict(state["learner"])
            history = list(state["history"])
            start = int(state["iteration"])
            if self.progress:
                print(f"resuming {self.run_dir} at iteration {start}")
        self._rewrite_metrics(history)
        began = time.perf_counter()
        for iteration in range(start, config.train.iterations):
            task_seed, episode_seed = iteration_seeds(config.seed, iteration)
            tasks = env.sample_tasks(config.train.meta_batch_size, seed=task_seed)
            tick = time.perf_counter()
            stats = learner.train_iteration(rollout, tasks, config.train.episodes_per_task, episode_seed)
            record = {"iteration": iteration + 1, **{k: float(v) for k, v in stats.items()},
                      "seconds": time.perf_counter() - tick}
            if not all(np.isfinite(v) for v in record.values()):
                raise TrainingDiverged(f"iteration {iteration + 1} produced non-finite statistics {record}; "
                                     "lower the step sizes (inner.lr, outer.max_kl or outer.lr)")
            history.append(record)
            with (self.run_dir / METRICS_FILE).open("a") as log:
                log.write(json.dumps(record) + "\n")
            if self.progress and (iteration + 1) % config.train.log_every == 0:
                print(f"iteration {iteration + 1}/{config.train.iterations}: return before "
                      f"{record['return_before']:.2f}, after {record['return_after']:.2f} "
                      f"({record['seconds']:.1f} s)", flush=True)
            last = iteration + 1 == config.train.iterations
            if (iteration + 1) % config.train.checkpoint_every == 0 or last:
                save_checkpoint({"learner": learner.state_dict(), "history": history, "iteration": iteration + 1,
                                 "config": config.to_dict()}, checkpoint_path)
        if history:
            save_learning_curve(history, self.run_dir / CURVE_FILE, title=f"{config.algorithm} on {config.env.name}")
        return RLTrainResult(len(history), time.perf_counter() - began,
                             history[-1]["return_before"] if history else float("nan"),
                             history[-1]["return_after"] if history else float("nan"))

    def _rewrite_metrics(self, history: list[dict[str, float]]) -> None:
        """The log holds exactly the checkpointed iterations (a crash may have logged a few more)."""
        with (self.run_dir / METRICS_FILE).open("w") as log:
            for record in history:
                log.write(json.dumps(record) + "\n")


def save_learning_curve(history: list[dict[str, float]], path: Path, title: str) -> None:
    """Mean return before and after adaptation against the outer iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [record["iteration"] for record in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(iterations, [record["return_before"] for record in history], label="before adaptation")
    if any(record["return_after"] != record["return_before"] for record in history):
        axes.plot(iterations, [record["return_after"] for record in history], label="after adaptation")
    axes.set_xlabel("outer iteration")
    axes.set_ylabel("mean episode return (training tasks)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
