"""The outer loop: everything around a meta-learner that is not mathematics.

The :class:`Trainer` samples meta-batches, steps the outer optimizer on ``learner.meta_loss``,
follows the learning-rate schedule, validates on fixed episodes and keeps the best checkpoint,
logs to ``metrics.jsonl``, and checkpoints so that an interrupted run, resumed, ends with exactly
the weights of an uninterrupted one:

* the meta-batch of step ``s`` is drawn from a generator seeded by ``(config.seed, s)``, so it
  does not depend on what ran before;
* the learning rate is a pure function of the step;
* ``last.pt`` carries the model, the optimizer, the step, the best validation result and
  torch's RNG state; it is written atomically every ``train.checkpoint_every`` steps, at the end,
  and when the loop is left by an exception (the state of the last completed step).

A non-finite loss stops the run with :class:`TrainingDiverged` before the bad step is applied.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from innerloop.algorithms.base import MetaLearner
from innerloop.config import Config, config_from_dict, save_config
from innerloop.data.store import ClassSplit
from innerloop.errors import InnerloopError, TrainingDiverged
from innerloop.evaluate.protocol import evaluate_accuracy
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.sampler import EpisodeSampler
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from innerloop.build import build_learner, load_splits, set_threads

VALIDATION_SEED_OFFSET = 1_000_003


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for the meta-batch of ``step``, independent of every other step."""
    digest = hashlib.sha256(f"innerloop-train:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def learning_rate(config: Config, step: int) -> float:
    """Outer learning rate at ``step`` (0-based) under the configured schedule."""
    optim = config.optim
    if optim.schedule == "step":
        return optim.lr * optim.gamma ** (step // optim.step_size)
    if optim.schedule == "cosine":
        return 0.5 * optim.lr * (1.0 + math.cos(math.pi * step / config.train.steps))
    return optim.lr


def build_optimizer(config: Config, learner: MetaLearner) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "sgd":
        return torch.optim.SGD(learner.parameters(), lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay)
    return torch.optim.Adam(learner.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    best_val_accuracy: float
    best_step: int
    seconds: float


def _resumable_part(config_dict: dict[str, Any]) -> dict[str, Any]:
    """What must not change when a run is resumed (everything but the step budget)."""
    trimmed = json.loads(json.dumps(config_dict))
    trimmed["train"].pop("steps")
    return trimmed


class Trainer:
    """Meta-trains ``config`` into ``run_dir``, resuming from ``run_dir/last.pt`` when present.

    Args:
        config: the validated run configuration.
        run_dir: the run's folder (config, metrics, checkpoints, reports).
        data_root: overrides ``config.data.root``.
        progress: show a progress bar.
        splits: already loaded splits by name (tests pass them to skip loading).
    """

    def __init__(self, config: Config, run_dir: str | Path, data_root: str | Path | None = None,
                 progress: bool = True, splits: dict[str, ClassSplit] | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        set_threads(config)
        names = [config.data.train_split, config.data.val_split]
        self.splits = splits or load_splits(config, data_root, names)
        train = config.train
        self.sampler = EpisodeSampler(self.splits[config.data.train_split], train.ways,
                                      train.shots, train.queries)
        evaluation = config.eval
        self.validation = FixedEpisodes(
            EpisodeSampler(self.splits[config.data.val_split], evaluation.ways, evaluation.shots,
                           evaluation.queries),
            train.val_episodes, seed=evaluation.seed + VALIDATION_SEED_OFFSET)
        self.learner = build_learner(config)
        self.optimizer = build_optimizer(config, self.learner)
        self.step = 0
        self.best_val_accuracy = -1.0
        self.best_step = -1

    # -- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_val_accuracy": self.best_val_accuracy,
            "best_step": self.best_step,
            "torch_rng_state": torch.get_rng_state(),
        }

    def _resume(self) -> None:
        path = self.run_dir / LAST
        if not path.is_file():
            return
        payload = load_checkpoint(path)
        saved = config_from_dict(payload["config"])
        if _resumable_part(saved.to_dict()) != _resumable_part(self.config.to_dict()):
            raise InnerloopError(
                f"{self.run_dir} holds a run with a different config; resume it with the same "
                f"config (only train.steps may change) or choose another run directory.")
        self.learner.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.best_val_accuracy = float(payload["best_val_accuracy"])
        self.best_step = int(payload["best_step"])
        torch.set_rng_state(payload["torch_rng_state"])
        self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")

    # -- the loop ----------------------------------------------------------------------------
    def validate(self) -> float:
        result = evaluate_accuracy(self.learner, self.validation, self.config.eval.batch_size)
        self._log({"step": self.step, "val_accuracy": result.mean, "val_ci95": result.ci95})
        if result.mean > self.best_val_accuracy:
            self.best_val_accuracy, self.best_step = result.mean, self.step
            save_checkpoint({"config": self.config.to_dict(), "step": self.step,
                             "model": self.learner.state_dict(), "val_accuracy": result.mean},
                            self.run_dir / BEST)
        return result.mean

    def fit(self) -> TrainResult:
        """Run (or finish) meta-training; returns the best validation accuracy and its step."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._resume()
        save_config(self.config, self.run_dir / "config.yaml")
        train = self.config.train
        start = time.perf_counter()
        bar = tqdm(total=train.steps, initial=self.step, disable=not self.progress,
                   desc=f"{self.config.model.algorithm} {train.ways}w{train.shots}s", unit="step")
        interval: dict[str, float] = {"loss": 0.0, "accuracy": 0.0, "count": 0}
        interval_start = time.perf_counter()
        self.learner.train()
        try:
            while self.step < train.steps:
                lr = learning_rate(self.config, self.step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                generator = torch.Generator().manual_seed(step_seed(self.config.seed, self.step))
                episodes = self.sampler.sample(train.meta_batch_size, generator)
                loss, metrics = self.learner.meta_loss(episodes)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"the meta-loss became {float(loss.detach())} at step {self.step + 1}; the update was "
                        f"not applied and {self.run_dir / LAST} holds the last good state. Lower "
                        f"optim.lr (now {lr:g}) or set optim.grad_clip, and start a new run.")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.config.optim.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.learner.parameters(), self.config.optim.grad_clip)
                self.optimizer.step()
                self.step += 1
                interval["loss"] += float(loss.detach())
                interval["accuracy"] += metrics.get("accuracy", float("nan"))
                interval["count"] += 1
                bar.update(1)
                if self.step % train.log_every == 0 or self.step == train.steps:
                    elapsed = time.perf_counter() - interval_start
                    count = interval["count"]
                    record = {"step": self.step, "loss": interval["loss"] / count,
                              "accuracy": interval["accuracy"] / count, "lr": lr,
                              "tasks_per_s": count * train.meta_batch_size / max(elapsed, 1e-9)}
                    self._log(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
                    interval = {"loss": 0.0, "accuracy": 0.0, "count": 0}
                    interval_start = time.perf_counter()
                if self.step % train.val_every == 0 or self.step == train.steps:
                    self.validate()
                    bar.set_postfix(best_val=f"{self.best_val_accuracy:.4f}")
                if self.step % train.checkpoint_every == 0 or self.step == train.steps:
                    save_checkpoint(self._payload(), self.run_dir / LAST)
        except BaseException:
            # Keep the last completed step: nothing is lost on a crash or Ctrl-C.
            save_checkpoint(self._payload(), self.run_dir / LAST)
            raise
        finally:
            bar.close()
        return TrainResult(self.run_dir, self.step, self.best_val_accuracy, self.best_step,
                           time.perf_counter() - start)
