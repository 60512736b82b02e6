"""The outer loop: Trainer, checkpoints, building learners from configs."""

from innerloop.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from innerloop.build import build_learner, load_splits
from innerloop.train.trainer import Trainer, TrainResult, learning_rate, step_seed

__all__ = ["BEST", "LAST", "TrainResult", "Trainer", "build_learner", "learning_rate",
           "load_checkpoint", "load_splits", "save_checkpoint", "step_seed"]
