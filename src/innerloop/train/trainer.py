"""The outer loop: everything around a meta-learner that is not mathematics.

The :class:`Trainer` samples meta-batches, steps the outer optimizer on ``learner.meta_loss``,
follows the learning-rate schedule, validates on fixed episodes and keeps the best checkpoint,
logs to ``metrics.jsonl``, and checkpoints so that an interrupted run, resumed, ends with exactly
the weights of an uninterrupted one (training meta-batches, never validation episodes, may be
interpolated across tasks: ``train.task_mixup``, :mod:`innerloop.tasks.task_mixup`):

* the meta-batch of step ``s`` is drawn from a generator seeded by ``(config.seed, s)``, so it
  does not depend on what ran before;
* the learning rate is a pure function of the step;
* ``last.pt`` carries the model, the optimizer, the step, the best validation result, the
  partial logging interval and torch's RNG state; it is written atomically every
  ``train.checkpoint_every`` steps, at the end, and when the loop is left by an exception or
  Ctrl-C. A step that raises before its update restores the BatchNorm statistics its forward
  pass changed, so the saved state is exactly that of the last completed step; a log line,
  validation or ``best.pt`` that a crash cut short is redone on resume.

A non-finite loss or meta-gradient norm stops the run with :class:`TrainingDiverged` before the
bad update is applied; an update that makes the weights non-finite stops it too, and is never
saved.

Under ``torchrun`` (an initialized process group) each rank trains on its slice of every
meta-batch and the meta-gradients are averaged across ranks; rank 0 alone validates and writes
files (:mod:`innerloop.train.distributed` explains the scheme). Without a process group nothing
of this runs.
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
from innerloop.build import (UserBackbone, build_learner, build_sampler, build_training_sampler,
                             load_splits, set_threads)
from innerloop.config import Config, config_from_dict, save_config, without_inapplicable_model_options
from innerloop.data.store import ClassSplit
from innerloop.errors import InnerloopError, TrainingDiverged
from innerloop.evaluate.protocol import evaluate_episodes
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.task_mixup import draw_task_mixup, mix_tasks, task_mixup_seed
from innerloop.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from innerloop.train.distributed import (ProcessPlace, any_rank, average_buffer_updates,
                                         average_gradients, average_scalars, broadcast_scalars,
                                         check_replicas_agree, current_place, rank_slice,
                                         rank_step_seed, wait_for_all_ranks)

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
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / config.train.steps))
        return optim.min_lr + (optim.lr - optim.min_lr) * cosine
    if optim.schedule == "linear":
        return optim.lr * (1.0 - step / config.train.steps)
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
    metric: str  # the validation score: accuracy (higher is better) or mse (lower is better)
    best_val_score: float
    best_step: int
    seconds: float


# How fast a run goes, not what it computes: these may change on resume (another thread count,
# another number of torchrun ranks), as may the step budget.
RESUMABLE_CHANGES = (("train", "steps"), ("num_threads",), ("train", "task_workers"),
                     ("train", "backward_per_task"), ("train", "channels_last"))


def _resumable_part(config_dict: dict[str, Any]) -> dict[str, Any]:
    """What must not change when a run is resumed (all but :data:`RESUMABLE_CHANGES`)."""
    trimmed = json.loads(json.dumps(config_dict))
    for *sections, key in RESUMABLE_CHANGES:
        section = trimmed
        for name in sections:
            section = section[name]
        section.pop(key, None)
    return trimmed


class Trainer:
    """Meta-trains ``config`` into ``run_dir``, resuming from ``run_dir/last.pt`` when present.

    Args:
        config: the validated run configuration.
        run_dir: the run's folder (config, metrics, checkpoints, reports).
        data_root: overrides ``config.data.root``.
        progress: show a progress bar.
        splits: already loaded splits by name (tests pass them to skip loading).
        place: this process's rank and world size; default: the initialized process group's
            (``torchrun``), else a single process.
        backbone: your own ``nn.Module`` (or a function that builds one) as the backbone, with
            ``model.backbone: custom`` (:func:`~innerloop.build.build_learner`).
    """

    def __init__(self, config: Config, run_dir: str | Path, data_root: str | Path | None = None,
                 progress: bool = True, splits: dict[str, ClassSplit] | None = None,
                 place: ProcessPlace | None = None, backbone: UserBackbone | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.place = place or current_place()
        self.progress = progress and self.place.is_main
        # This rank's tasks of every meta-batch; raises when there are fewer tasks than ranks.
        self.task_slice = rank_slice(config.train.meta_batch_size, self.place.rank, self.place.world_size)
        self.task_weight = (self.task_slice.stop - self.task_slice.start) / config.train.meta_batch_size
        set_threads(config)
        names = [config.data.train_split, config.data.val_split]
        self.splits = splits or load_splits(config, data_root, names)
        train = config.train
        self.sampler = build_training_sampler(config, self.splits[config.data.train_split])
        evaluation = config.eval
        self.validation = FixedEpisodes(
            build_sampler(config, self.splits[config.data.val_split], evaluation.ways,
                          evaluation.shots, evaluation.queries),
            train.val_episodes, seed=evaluation.seed + VALIDATION_SEED_OFFSET)
        self.learner = build_learner(config, backbone)
        self.optimizer = build_optimizer(config, self.learner)
        self.step = 0
        self.best_val_score = math.nan  # nan until the first validation
        self.best_val_non_finite = 0  # diverged validation episodes of the best checkpoint
        self.best_step = -1
        self.validated_step = -1
        self.logged_step = -1
        self.interval: dict[str, float] = {"loss": 0.0, "count": 0, "lr": 0.0}
        self._consistent = True

    # -- checkpoints -------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_val_score": self.best_val_score,
            "best_val_non_finite": self.best_val_non_finite,
            "best_step": self.best_step,
            "validated_step": self.validated_step,
            "logged_step": self.logged_step,
            "interval": dict(self.interval),
            "torch_rng_state": torch.get_rng_state(),
        }

    def _save_last(self) -> None:
        """Write ``last.pt`` (rank 0 only: every rank holds the same weights)."""
        if self.place.is_main:
            save_checkpoint(self._payload(), self.run_dir / LAST)

    def _resume(self) -> None:
        path = self.run_dir / LAST
        if not path.is_file():
            return
        payload = load_checkpoint(path)
        saved = config_from_dict(without_inapplicable_model_options(payload["config"]))
        if _resumable_part(saved.to_dict()) != _resumable_part(self.config.to_dict()):
            raise InnerloopError(
                f"{self.run_dir} holds a run with a different config; resume it with the same "
                f"config (only train.steps and the speed settings num_threads, train.task_workers, "
                f"train.backward_per_task and train.channels_last may change) or choose another "
                f"run directory.")
        self.learner.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.best_val_non_finite = int(payload.get("best_val_non_finite", 0))
        if "best_val_score" in payload:
            self.best_val_score = float(payload["best_val_score"])
        else:  # a checkpoint from before validation scores were generic: -1.0 meant "none yet"
            old = float(payload.get("best_val_accuracy", -1.0))
            self.best_val_score = math.nan if old < 0 else old
        self.best_step = int(payload["best_step"])
        self.validated_step = int(payload.get("validated_step", self.step))
        self.logged_step = int(payload.get("logged_step", self.step))
        self.interval = dict(payload.get("interval", self.interval))
        torch.set_rng_state(payload["torch_rng_state"])
        if self.place.is_main:
            self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Keep the log lines of the state we resume from; the rest will be written again."""
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    last = self.validated_step if "val_ci95" in record else self.logged_step
                    if record["step"] <= min(last, self.step):
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # a line torn by the crash
            path.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.place.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")

    # -- the loop ----------------------------------------------------------------------------
    def validate(self) -> float:
        """Score the fixed validation episodes; keep ``best.pt``. Each write comes before the
        state that records it, so an interruption anywhere leaves a state that resume redoes.

        With several ranks, rank 0 validates and the others wait for its outcome, so that every
        rank holds the same ``best_*`` and ``validated_step``."""
        if not self.place.is_distributed:
            return self._validate_here()
        score = self._validate_here() if self.place.is_main else math.nan
        outcome = broadcast_scalars([score, self.best_val_score, self.best_val_non_finite,
                                     self.best_step, self.validated_step])
        score, self.best_val_score = outcome[0], outcome[1]
        self.best_val_non_finite, self.best_step, self.validated_step = (int(v) for v in outcome[2:])
        return score

    def _validate_here(self) -> float:
        result = evaluate_episodes(self.learner, self.validation, self.config.eval.batch_size)
        if self._improves(result.mean, result.non_finite):
            save_checkpoint({"config": self.config.to_dict(), "step": self.step,
                             "model": self.learner.state_dict(), f"val_{result.metric}": result.mean},
                            self.run_dir / BEST)
            self.best_val_score, self.best_step = result.mean, self.step
            self.best_val_non_finite = result.non_finite
        record = {"step": self.step, f"val_{result.metric}": result.mean, "val_ci95": result.ci95}
        if result.non_finite:  # episodes whose adaptation diverged, left out of the mean
            record["val_non_finite"] = result.non_finite
        self._log(record)
        self.validated_step = self.step
        return result.mean

    def _improves(self, score: float, non_finite: int = 0) -> bool:
        """Fewer diverged validation episodes first, then the better mean of the others."""
        if math.isnan(self.best_val_score):
            return not math.isnan(score)
        if non_finite != self.best_val_non_finite:
            return non_finite < self.best_val_non_finite
        if self.learner.higher_is_better:
            return score > self.best_val_score
        return score < self.best_val_score

    def _due(self, every: int, done_step: int) -> bool:
        at_step = self.step % every == 0 or self.step == self.config.train.steps
        return self.step > 0 and at_step and done_step != self.step

    def _validation_due(self) -> bool:
        return self._due(self.config.train.val_every, self.validated_step)

    def _logging_due(self) -> bool:
        return self._due(self.config.train.log_every, self.logged_step) and self.interval["count"] > 0

    def _train_step(self) -> None:
        """One outer step. If it raises before the update, the learner is as it was before it."""
        train = self.config.train
        buffers = {name: buffer.clone() for name, buffer in self.learner.named_buffers()}
        rng_state = torch.get_rng_state()
        lr = learning_rate(self.config, self.step)
        try:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            generator = torch.Generator().manual_seed(step_seed(self.config.seed, self.step))
            if self.place.is_distributed:
                episodes = self._rank_episodes(generator)
            else:
                episodes = self.sampler.sample(train.meta_batch_size, generator)
            if train.task_mixup > 0:
                episodes = self._mix_tasks(episodes)
            self.learner.set_training_step(self.step)
            loss, metrics = self.learner.meta_loss(episodes)
            metric = self.learner.metric_name
            loss_value, metric_value = float(loss.detach()), metrics.get(metric, math.nan)
            advice = (f"The update was not applied and {self.run_dir / LAST} holds the last good "
                      f"state. Lower optim.lr (now {lr:g}) or set optim.grad_clip, and start a new run.")
            loss_finite = bool(torch.isfinite(loss))
            if self.place.is_distributed:  # the meta-batch's mean, and one decision for all ranks
                loss_value, metric_value = average_scalars([loss_value, metric_value], self.task_weight)
                loss_finite = not any_rank(not loss_finite)
            if not loss_finite:
                raise TrainingDiverged(f"the meta-loss became {loss_value} at step "
                                       f"{self.step + 1}. {advice}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.place.is_distributed:  # the same averaged gradient and buffers on every rank
                average_gradients(self.learner, self.task_weight)
                average_buffer_updates(self.learner, buffers, self.task_weight)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.learner.parameters(),
                                                       self.config.optim.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                raise TrainingDiverged(f"the meta-gradient norm became {float(grad_norm)} at step "
                                       f"{self.step + 1}. {advice}")
        except BaseException:
            with torch.no_grad():  # undo what the forward pass did to BatchNorm statistics
                for name, buffer in self.learner.named_buffers():
                    buffer.copy_(buffers[name])
            torch.set_rng_state(rng_state)
            raise
        self._consistent = False  # an interrupt inside the update leaves no valid state to save
        self.optimizer.step()
        if not self._finite():
            raise TrainingDiverged(
                f"the update of step {self.step + 1} made the weights non-finite (with a finite "
                f"meta-gradient). {self.run_dir / LAST} holds the newest finite state (the last "
                f"periodic checkpoint). Lower optim.lr (now {lr:g}) and start a new run.")
        self.interval["loss"] += loss_value
        self.interval[metric] = self.interval.get(metric, 0.0) + metric_value
        self.interval["count"] += 1
        self.interval["lr"] = lr
        self.step += 1
        self._consistent = True

    def _rank_episodes(self, generator: torch.Generator) -> Episodes:
        """This rank's slice of the meta-batch of the step whose seed ``generator`` holds: the
        plan of the whole meta-batch, as one process draws it, then only this slice's tensors.
        Ranks > 0 reseed torch's stream from ``(seed, rank, step)`` (rank 0 keeps its own)."""
        if not self.place.is_main:
            torch.manual_seed(rank_step_seed(self.config.seed, self.place.rank, self.step))
        plan = self.sampler.sample_indices(self.config.train.meta_batch_size, generator)
        return self.sampler.gather(plan.slice(self.task_slice.start, self.task_slice.stop))

    def _mix_tasks(self, episodes: Episodes) -> Episodes:
        """MLTI task interpolation (:mod:`innerloop.tasks.task_mixup`) of this step's tasks (this
        rank's slice of them): the mixup of the whole meta-batch is drawn from ``(seed, step)``,
        then this slice's share is applied, so every rank count trains on the same mixed tasks."""
        train = self.config.train
        plan = draw_task_mixup(self.sampler, train.meta_batch_size, train.task_mixup,
                               train.task_mixup_alpha, task_mixup_seed(self.config.seed, self.step))
        plan = plan.slice(self.task_slice.start, self.task_slice.stop)
        if not bool(plan.mixed.any()):
            return episodes
        return mix_tasks(episodes, self.sampler.gather(plan.partners), plan.mixed, plan.lambdas)

    def _log_interval(self, seconds: float) -> dict[str, float]:
        count = self.interval["count"]
        metric = self.learner.metric_name
        record = {"step": self.step, "loss": self.interval["loss"] / count,
                  metric: self.interval.get(metric, math.nan) / count, "lr": self.interval["lr"],
                  "tasks_per_s": count * self.config.train.meta_batch_size / max(seconds, 1e-9)}
        if self.place.is_distributed:  # tasks_per_s counts the whole meta-batch of all ranks
            record["world_size"] = self.place.world_size
        self._log(record)
        self.logged_step = self.step
        self.interval = {"loss": 0.0, "count": 0, "lr": 0.0}
        return record

    def _finite(self) -> bool:
        """Whether every parameter and floating-point buffer is finite."""
        tensors = [*self.learner.parameters(), *self.learner.buffers()]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())

    def fit(self) -> TrainResult:
        """Run (or finish) meta-training; returns the best validation accuracy and its step."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.place.is_distributed:
            wait_for_all_ranks()  # rank 0 has finished writing any earlier run's last.pt
        self._resume()
        check_replicas_agree(self.learner, self.step, self.run_dir)  # every rank read the same state
        if self.place.is_main:
            save_config(self.config, self.run_dir / "config.yaml")
        train = self.config.train
        start = interval_start = time.perf_counter()
        bar = tqdm(total=train.steps, initial=self.step, disable=not self.progress,
                   desc=f"{self.config.model.algorithm} {train.ways}w{train.shots}s", unit="step")
        self.learner.train()
        try:
            while True:
                # The duties of a completed step; on resume, those a crash cut short.
                if self._logging_due():
                    record = self._log_interval(time.perf_counter() - interval_start)
                    bar.set_postfix(loss=f"{record['loss']:.3f}",
                                    **{self.learner.metric_name: f"{record[self.learner.metric_name]:.3f}"})
                    interval_start = time.perf_counter()
                if self._validation_due():
                    self.validate()
                    bar.set_postfix(best_val=f"{self.best_val_score:.4f}")
                if self.step > 0 and (self.step % train.checkpoint_every == 0 or self.step == train.steps):
                    self._save_last()
                if self.step >= train.steps:
                    break
                self._train_step()
                bar.update(1)
        except BaseException:
            # Keep the last completed step: nothing is lost on a crash or Ctrl-C.
            if self._consistent and self._finite():
                self._save_last()
            raise
        finally:
            bar.close()
        if self.place.is_distributed:
            wait_for_all_ranks()  # when fit returns on any rank, rank 0 has written the run
        return TrainResult(self.run_dir, self.step, self.learner.metric_name, self.best_val_score,
                           self.best_step, time.perf_counter() - start)
